"""Stage 1: RandSAC pre-training (appendix B.4).

AdamW (no weight decay on norms and biases), lr = base_lr * batch / 256 with a per-iteration
linear warm-up and cosine decay, RandomResizedCrop(0.2-1) + flip, normalized-pixel loss.
A fresh random serialization of the segments is drawn for every image of every step.
"""
from __future__ import annotations

from pathlib import Path

from harness import engine
from harness.config import RunConfig
from harness.data import build_dataset, dataset_info, pretrain_transform
from harness.model import RandSAC
from harness.segments import Serializer

ENCODER_FILE = "encoder.pt"


def build(cfg: RunConfig) -> RandSAC:
    return RandSAC(cfg.model, cfg.data.image_size, dataset_info(cfg.data.name).channels)


def run(cfg: RunConfig, run_dir: Path, tracker, parent_dir: Path | None = None,
        stop_after: int | None = None) -> dict[str, float]:
    device = engine.select_device(cfg)
    engine.seed_everything(cfg.seed)
    info = dataset_info(cfg.data.name)
    train = engine.subset(build_dataset(cfg.data.name, cfg.data.root, train=True,
                                        transform=pretrain_transform(info, cfg.data.image_size)),
                          cfg.data.train_subset)
    model = build(cfg).to(device)
    optimizer, schedule = engine.optimizer_and_schedule(model, cfg.pretrain, len(train))
    serializer = Serializer(cfg.segments, cfg.grid_size)

    def loss_fn(imgs, _labels):
        ranks = serializer(imgs.shape[0]).to(imgs.device)
        return model.loss(imgs, ranks, cfg.pretrain.norm_pix_loss)

    history = engine.fit(train_set=train, opt_cfg=cfg.pretrain, seed=cfg.seed, num_workers=cfg.data.num_workers,
                         device=device, module=model, loss_fn=loss_fn, optimizer=optimizer, schedule=schedule,
                         checkpoint=engine.Checkpoint(run_dir), tracker=tracker, stop_after=stop_after,
                         saved={"model": model, "optimizer": optimizer, "schedule": schedule})
    engine.atomic_save(model.encoder.state_dict(), Path(run_dir) / ENCODER_FILE)
    return {"final_loss": history[-1]["loss"]}
