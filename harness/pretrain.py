"""Stage 1: pre-training (appendix B.4), RandSAC or one of Table 7's baselines (MAE, DINO).

AdamW (no weight decay on norms and biases), lr = base_lr * batch / 256 with a per-iteration
linear warm-up and cosine decay, RandomResizedCrop(0.2-1) + flip, normalized-pixel loss.
RandSAC draws fresh segments and a fresh serialization for every image of every step.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness import engine
from harness.config import RunConfig
from harness.distributed import SINGLE, Dist
from harness.data import dataset_info, pretrain_transform
from harness.model import MAE, RandSAC
from harness.segments import Serializer

ENCODER_FILE = "encoder.pt"


def build(cfg: RunConfig) -> torch.nn.Module:
    """The pre-training model of `cfg.method`; each has an `.encoder` (what evaluation keeps)."""
    size, chans = cfg.data.image_size, dataset_info(cfg.data.name).channels
    if cfg.method == "randsac":
        return RandSAC(cfg.model, size, chans)
    if cfg.method == "mae":
        return MAE(cfg.model, size, chans, cfg.pretrain.mask_ratio)
    if cfg.method == "dino":
        from harness.dino import DINO  # lightly is imported only by DINO runs

        return DINO(cfg.model, cfg.dino, size, chans)
    raise ValueError(f"method {cfg.method!r} has no pre-training stage")


def objective(cfg: RunConfig, model: torch.nn.Module):
    """loss_fn(batch..., epoch) of the method, and its after-step hook (DINO's teacher EMA)."""
    norm_pix = cfg.pretrain.norm_pix_loss
    if cfg.method == "randsac":
        serializer = Serializer(cfg.segments, cfg.grid_size)
        return (lambda imgs, _labels, epoch: model.loss(imgs, serializer(imgs.shape[0]).to(imgs.device), norm_pix)), None
    if cfg.method == "mae":
        return (lambda imgs, _labels, epoch: model.loss(imgs, norm_pix)), None
    return (lambda views, _labels, epoch: model.loss(views, epoch)), model.update_teacher


def run(cfg: RunConfig, run_dir: Path, tracker, parent_dir: Path | None = None,
        stop_after: int | None = None,
        dist: Dist = SINGLE) -> dict[str, float]:
    device = engine.select_device(cfg)
    engine.seed_everything(cfg.seed)
    info = dataset_info(cfg.data.name)
    if cfg.method == "dino":
        from harness.dino import MultiCrop

        transform = MultiCrop(cfg.dino, info, cfg.data.image_size, cfg.model.patch_size)
    else:
        transform = pretrain_transform(info, cfg.data.image_size)
    train, _, _ = engine.splits(cfg, transform, None)
    model = build(cfg).to(device)
    optimizer, schedule = engine.optimizer_and_schedule(model, cfg.pretrain, len(train))
    loss_fn, after_step = objective(cfg, model)
    history = engine.fit(train_set=train, opt_cfg=cfg.pretrain, seed=cfg.seed, num_workers=cfg.data.num_workers,
                         device=device, module=model, loss_fn=loss_fn, optimizer=optimizer, schedule=schedule,
                         checkpoint=engine.Checkpoint(run_dir), tracker=tracker, stop_after=stop_after,
                         after_step=after_step, dist=dist, saved={"model": model, "optimizer": optimizer, "schedule": schedule})
    if dist.is_main:
        engine.atomic_save(model.encoder.state_dict(), Path(run_dir) / ENCODER_FILE)
    dist.barrier()
    return {"final_loss": history[-1]["loss"]}
