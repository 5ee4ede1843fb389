"""What every method is: the stages its cells run, its own settings, its defaults per scale, its
checks, how it pre-trains and where its evaluation stages get their encoder.

A method's module imports nothing heavy at its top: planning, the launcher and the tables read a
method's settings and defaults without torch (a waiting launcher stays a small process); the
functions that train import what they need when they run.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from harness.core.catalog import dataset_info
from harness.core.config import RunConfig
from harness.core.stages import STAGES, Strict

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from harness.core.layout import RunFolder
    from harness.science.device_transforms import DeviceAugment
    from harness.science.encoder import Encoder


def check_pixel_targets(cfg: RunConfig) -> None:
    """A method that predicts normalized pixels needs at least 2 values per patch to normalize."""
    if cfg.pretrain.norm_pix_loss and cfg.model.patch_size ** 2 * dataset_info(cfg.data.name).channels < 2:
        raise ValueError("pretrain.norm_pix_loss needs at least 2 values per patch (patch_size 1 on a 1-channel "
                         "dataset); use patch_size >= 2 or norm_pix_loss: false")


class Settings(Strict):
    """A method's own hyper-parameters: the config section named after the method."""


class Method:
    """One class per method file, registered by name in harness.science.methods.

    Planning reads its class attributes: `stages` (the stage runs of a cell, in order),
    `settings` (its own section's model, or None), `reads` (the shared sections its pre-training
    reads besides method, data, model, pretrain and seed: what its signature hashes), `presets`
    (scale -> what it changes in that scale's preset, e.g. an official optimizer recipe) and
    `check(cfg)`. A stage makes one instance per run: pre-training calls `build` (a model with an
    `.encoder`), `transform` (the augmentation of its training images), `loss(batch, epoch)` for
    every step, `before_step(optimizer, epoch, step, total)` between its backward pass and the
    optimizer step, and `after_step(step, total)` after every optimizer step. Evaluation calls
    `initial_encoder`.
    """

    stages: ClassVar[tuple[str, ...]] = STAGES
    settings: ClassVar[type[Settings] | None] = None
    reads: ClassVar[tuple[str, ...]] = ()
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.info = dataset_info(cfg.data.name)
        self.model: nn.Module | None = None

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Raise ValueError when the config cannot run with this method; nothing by default."""

    def build(self) -> nn.Module:
        raise ValueError(f"method {self.cfg.method} has no pre-training stage")

    def transform(self) -> Callable:
        """MAE's pre-training augmentation (random resized crop + flip, as `pretrain` says)."""
        from harness.science.transforms import pretrain_transform

        pre = self.cfg.pretrain
        return pretrain_transform(self.info, self.cfg.data.image_size, pre.crop_scale, pre.hflip)

    def device_augment(self) -> DeviceAugment | None:
        """The same augmentation batched on the device (None: the method has no device form)."""
        from harness.science.device_transforms import DeviceAugment

        pre = self.cfg.pretrain
        return DeviceAugment(self.info.mean, self.info.std, self.cfg.data.image_size,
                             None if pre.crop_scale is None else tuple(pre.crop_scale), hflip=pre.hflip)

    def loss(self, batch: Any, epoch: int) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one training batch (already on the device), optionally with other
        per-batch values to average over the epoch (e.g. its floor, `loss_floor`)."""
        raise ValueError(f"method {self.cfg.method} has no pre-training stage")

    def before_step(self, optimizer: torch.optim.Optimizer, epoch: int, step: int, total_steps: int) -> None:
        """Runs after the backward pass, before the optimizer step; nothing by default."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Runs after every optimizer step (DINO's teacher update); nothing by default."""

    def reconstruction(self, imgs: torch.Tensor, out: Path) -> Path | None:
        """A picture of what the pre-trained model predicts for `imgs`; none by default."""
        return None

    def initial_encoder(self, encoder: Encoder, parent: RunFolder | None) -> Encoder:
        """The encoder evaluation starts from: the weights its pre-training run `parent` saved."""
        import torch

        encoder.load_state_dict(torch.load(parent.encoder, map_location="cpu", weights_only=True))
        return encoder
