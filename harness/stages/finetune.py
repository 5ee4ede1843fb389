"""Stage 2b: end-to-end fine-tuning of the pre-trained encoder (paper section 5.1, Table 18);
from random initialisation it is Table 7's supervised baseline.

AdamW with layer-wise lr decay, drop path, mixup / cutmix and label smoothing, all from timm;
RandAugment through timm's transform when the recipe names one. Reports top-1 on the
evaluation split.
"""
from __future__ import annotations

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from harness.core.stages import FinetuneConfig
from harness.science.encoder import Classifier
from harness.science.transforms import eval_transform, finetune_transform
from harness.stages import engine
from harness.stages.context import StageContext


def criterion_and_mixup(opt_cfg: FinetuneConfig, num_classes: int):
    if opt_cfg.mixup > 0 or opt_cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=opt_cfg.mixup, cutmix_alpha=opt_cfg.cutmix,
                      label_smoothing=opt_cfg.label_smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if opt_cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(opt_cfg.label_smoothing), None
    return torch.nn.CrossEntropyLoss(), None


def run(ctx: StageContext) -> dict[str, float]:
    cfg, device = ctx.cfg, ctx.device
    engine.seed_everything(cfg.seed)
    info, size, opt_cfg = ctx.info, cfg.eval_size, cfg.finetune
    model = Classifier(ctx.initial_encoder(drop_path=opt_cfg.drop_path), info.num_classes).to(device)
    train_tf = finetune_transform(info, size, opt_cfg.rand_augment, opt_cfg.crop_scale, opt_cfg.hflip)
    train, test, split = ctx.splits(train_tf, eval_transform(info, size))
    criterion, mixup = criterion_and_mixup(opt_cfg, info.num_classes)
    optimizer, schedule = engine.optimizer_and_schedule(model, opt_cfg, len(train), layer_decay=opt_cfg.layer_decay)

    def loss(batch, epoch):
        imgs, labels = batch
        if mixup is not None:
            imgs, labels = mixup(imgs, labels)
        return criterion(model(imgs), labels)

    history = engine.fit(ctx, engine.Task(
        train_set=train, opt=opt_cfg, module=model, optimizer=optimizer, schedule=schedule, loss=loss,
        saved={"model": model, "optimizer": optimizer, "schedule": schedule},
        evaluate=lambda: engine.accuracy(model, engine.eval_loader(test), device), eval_split=split))
    return engine.final_accuracy(history, split)
