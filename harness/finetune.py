"""Stage 2b: end-to-end fine-tuning of the pre-trained encoder (paper section 5.1, Table 18);
from random initialisation it is Table 7's supervised baseline.

AdamW with layer-wise lr decay, drop path, mixup / cutmix and label smoothing, all from timm;
RandAugment through timm's transform when the recipe names one. Reports top-1 on the test split.
"""
from __future__ import annotations

from pathlib import Path

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from harness import engine
from harness.config import FinetuneConfig, RunConfig
from harness.distributed import SINGLE, Dist
from harness.data import dataset_info, eval_transform, finetune_transform
from harness.linprobe import eval_loader, load_encoder
from harness.model import Classifier


def criterion_and_mixup(opt_cfg: FinetuneConfig, num_classes: int):
    if opt_cfg.mixup > 0 or opt_cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=opt_cfg.mixup, cutmix_alpha=opt_cfg.cutmix,
                      label_smoothing=opt_cfg.label_smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if opt_cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(opt_cfg.label_smoothing), None
    return torch.nn.CrossEntropyLoss(), None


def run(cfg: RunConfig, run_dir: Path, tracker, parent_dir: Path | None, stop_after: int | None = None,
        dist: Dist = SINGLE) -> dict[str, float]:
    device = engine.select_device(cfg)
    engine.seed_everything(cfg.seed)
    info, size, opt_cfg = dataset_info(cfg.data.name), cfg.eval_size, cfg.finetune
    model = Classifier(load_encoder(cfg, parent_dir, drop_path=opt_cfg.drop_path), info.num_classes).to(device)
    train_tf = finetune_transform(info, size, opt_cfg.rand_augment, opt_cfg.crop_scale, opt_cfg.hflip)
    train, test, eval_name = engine.splits(cfg, train_tf, eval_transform(info, size))
    criterion, mixup = criterion_and_mixup(opt_cfg, info.num_classes)
    optimizer, schedule = engine.optimizer_and_schedule(model, opt_cfg, len(train), layer_decay=opt_cfg.layer_decay)

    def loss_fn(imgs, labels, epoch):
        if mixup is not None:
            imgs, labels = mixup(imgs, labels)
        return criterion(model(imgs), labels)

    history = engine.fit(train_set=train, opt_cfg=opt_cfg, seed=cfg.seed, num_workers=cfg.data.num_workers,
                         device=device, module=model, loss_fn=loss_fn, optimizer=optimizer, schedule=schedule,
                         checkpoint=engine.Checkpoint(run_dir), tracker=tracker, stop_after=stop_after,
                         evaluate=lambda: engine.accuracy(model, eval_loader(test), device), eval_name=eval_name,
                         dist=dist, saved={"model": model, "optimizer": optimizer, "schedule": schedule})
    return engine.final_accuracy(history, eval_name)
