"""Stage 2a: linear probing of the frozen pre-trained encoder (paper section 5.1, MAE's protocol).

Features: average-pooled last encoder layer, no masks, no decoder. Head: BatchNorm1d without
affine + Linear. With `augment` (the paper recipe) each step runs the frozen encoder on
RandomResizedCrop + flip views; without it (smoke, tiny) features are computed once and cached.
Reports top-1 on the test split.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from harness import engine
from harness.config import RunConfig
from harness.distributed import SINGLE, Dist
from harness.data import dataset_info, eval_transform, probe_transform
from harness.model import Encoder, LinearProbe, init_weights
from harness.pretrain import ENCODER_FILE


def load_encoder(cfg: RunConfig, parent_dir: Path | None, drop_path: float = 0.0) -> Encoder:
    """The encoder saved by the pre-training run in `parent_dir`; randomly initialised without
    one (the supervised baseline). Its position encodings are those of the pre-training
    resolution, interpolated when evaluation runs at another size."""
    encoder = Encoder(cfg.model, cfg.data.image_size, dataset_info(cfg.data.name).channels, drop_path=drop_path)
    if parent_dir is None:
        init_weights(encoder)
    else:
        encoder.load_state_dict(torch.load(Path(parent_dir) / ENCODER_FILE, map_location="cpu", weights_only=True))
    return encoder


@torch.no_grad()
def extract(encoder: Encoder, ds, device: torch.device) -> TensorDataset:
    encoder.eval()
    feats, labels = [], []
    for imgs, y in engine.epoch_loader(ds, 256, 0, 0, shuffle=False, drop_last=False):
        with engine.autocast(device):
            feats.append(encoder.features(imgs.to(device)).float().cpu())
        labels.append(y)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def eval_loader(ds):
    return engine.epoch_loader(ds, 256, 0, 0, shuffle=False, drop_last=False)


def run(cfg: RunConfig, run_dir: Path, tracker, parent_dir: Path | None, stop_after: int | None = None,
        dist: Dist = SINGLE) -> dict[str, float]:
    device = engine.select_device(cfg)
    engine.seed_everything(cfg.seed)
    info, size, opt_cfg = dataset_info(cfg.data.name), cfg.eval_size, cfg.linprobe
    probe = LinearProbe(load_encoder(cfg, parent_dir), info.num_classes).to(device)
    train_tf = probe_transform(info, size) if opt_cfg.augment else eval_transform(info, size)
    train, test, eval_name = engine.splits(cfg, train_tf, eval_transform(info, size))
    model: torch.nn.Module = probe
    if not opt_cfg.augment:  # frozen encoder and fixed views: compute the features once
        train, test = extract(probe.encoder, train, device), extract(probe.encoder, test, device)
        model = probe.head
    optimizer, schedule = engine.optimizer_and_schedule(probe.head, opt_cfg, len(train))

    history = engine.fit(train_set=train, opt_cfg=opt_cfg, seed=cfg.seed, num_workers=cfg.data.num_workers,
                         device=device, module=probe.head, loss_fn=lambda x, y, epoch: F.cross_entropy(model(x), y),
                         optimizer=optimizer, schedule=schedule, checkpoint=engine.Checkpoint(run_dir),
                         tracker=tracker, stop_after=stop_after,
                         evaluate=lambda: engine.accuracy(model, eval_loader(test), device), eval_name=eval_name,
                         dist=dist, saved={"head": probe.head, "optimizer": optimizer, "schedule": schedule})
    return engine.final_accuracy(history, eval_name)
