"""Stage 2a: linear probing of the frozen pre-trained encoder (paper section 5.1, MAE's protocol).

Features: average-pooled last encoder layer, no masks, no decoder. Head: BatchNorm1d without
affine + Linear. With `augment` (the paper recipe) each step runs the frozen encoder on
RandomResizedCrop + flip views (on CUDA, for datasets that fit, made on the device as
pre-training's are: harness.stages.device_data); without it (smoke, tiny) features are computed
once and cached. Reports top-1 on the evaluation split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from harness.core.catalog import DatasetInfo
from harness.science.device_transforms import DeviceAugment
from harness.science.encoder import Encoder, LinearProbe
from harness.science.transforms import eval_transform, probe_transform
from harness.stages import device_data, engine
from harness.stages.context import StageContext


@torch.no_grad()
def extract(encoder: Encoder, ds, device: torch.device) -> TensorDataset:
    encoder.eval()
    feats, labels = [], []
    for imgs, y in engine.taking_turns(engine.eval_loader(ds), device):
        with engine.autocast(device):
            feats.append(encoder.features(imgs.to(device)).float().cpu())
        labels.append(y)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def device_augment(info: DatasetInfo, size: int) -> DeviceAugment:
    """`probe_transform` batched on the device: RandomResizedCrop (torchvision's default scale
    0.08-1, ratio 3/4-4/3, bicubic) + flip."""
    return DeviceAugment(info.mean, info.std, size, crop_scale=(0.08, 1.0), hflip=0.5)


def run(ctx: StageContext) -> dict[str, float]:
    cfg, device = ctx.cfg, ctx.device
    engine.seed_everything(cfg.seed)
    info, size, opt_cfg = ctx.info, cfg.eval_size, cfg.linprobe
    probe = LinearProbe(ctx.initial_encoder(), info.num_classes).to(device)
    train_tf = probe_transform(info, size) if opt_cfg.augment else eval_transform(info, size)
    train, test, split = ctx.splits(train_tf, eval_transform(info, size))
    model: torch.nn.Module = probe
    if not opt_cfg.augment:  # frozen encoder and fixed views: compute the features once
        train, test = extract(probe.encoder, train, device), extract(probe.encoder, test, device)
        model = probe.head
    elif device_data.wanted(cfg, device, augment := device_augment(info, size)):
        train = device_data.DeviceSet.of(train, augment, device)
    optimizer, schedule = engine.optimizer_and_schedule(probe.head, opt_cfg, len(train))
    history = engine.fit(ctx, engine.Task(
        train_set=train, opt=opt_cfg, module=probe.head, optimizer=optimizer, schedule=schedule,
        loss=lambda batch, epoch: F.cross_entropy(model(batch[0]), batch[1]),
        saved={"head": probe.head, "optimizer": optimizer, "schedule": schedule},
        evaluate=lambda: engine.accuracy(model, engine.eval_loader(test), device), eval_split=split))
    return engine.final_accuracy(history, split)
