"""Table 7's DINO baseline (Caron et al. 2021) on the same ViT encoder: its settings, its
official recipe and training loop's stabilisers, its multi-crop views (the model:
harness.science.dino.DINO, built from lightly's head, loss and transform)."""
from __future__ import annotations

from pydantic import Field

from harness.science.methods.base import Method as Base, Settings


class DinoSettings(Settings):
    out_dim: int = Field(65536, gt=0)
    hidden_dim: int = Field(2048, gt=0)
    bottleneck_dim: int = Field(256, gt=0)
    teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp_epochs: int = Field(30, ge=0)
    student_temp: float = Field(0.1, gt=0)
    momentum: float = Field(0.996, gt=0, le=1)  # teacher EMA, cosine-scheduled to 1
    local_views: int = Field(6, ge=0)
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    local_crop_size: int | None = None  # default: half the image size, a multiple of the patch
    # the official training loop's stabilisers (facebookresearch/dino main_dino.py)
    clip_grad: float | None = Field(3.0, gt=0)  # each parameter's gradient norm clipped to this
    freeze_last_layer: int = Field(1, ge=0)  # epochs during which the head's last layer does not train
    weight_decay_end: float | None = Field(0.4, ge=0)  # cosine from pretrain.weight_decay to this; None: constant


class Method(Base):
    settings = DinoSettings
    presets = {
        # the official recipe (main_dino.py) over the study's epochs, batch and warm-up: lr 5e-4 per
        # 256 images, min lr 1e-6, AdamW's default betas, weight decay 0.04 -> 0.4
        "paper": {"pretrain": {"base_lr": 5e-4, "min_lr": 1e-6, "weight_decay": 0.04, "betas": [0.9, 0.999]},
                  "dino": {"weight_decay_end": 0.4}},
        # a small head and two local views; at the official lr the loss collapses to ln(out_dim)
        # within 2,500 steps of batch 16 (docs/findings.md, DINO at smoke)
        "smoke": {"pretrain": {"base_lr": 5e-3},
                  "dino": {"out_dim": 1024, "hidden_dim": 512, "bottleneck_dim": 128, "local_views": 2,
                           "warmup_teacher_temp_epochs": 2}},
        "tiny": {"dino": {"out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32, "local_views": 2,
                          "warmup_teacher_temp_epochs": 1}},
    }

    def build(self):
        from harness.science.dino import DINO

        self.model = DINO(self.cfg.model, self.cfg.dino, self.cfg.data.image_size, self.info.channels)
        return self.model

    def transform(self):
        from harness.science.dino import MultiCrop

        return MultiCrop(self.cfg.dino, self.info, self.cfg.data.image_size, self.cfg.model.patch_size)

    def device_augment(self) -> None:
        return None  # multi-crop (two global and several local views) stays on the PIL path

    def loss(self, batch, epoch: int):
        views, _labels = batch
        return self.model.loss(views, epoch)

    def before_step(self, optimizer, epoch: int, step: int, total_steps: int) -> None:
        from lightly.utils.scheduler import cosine_schedule

        self.model.stabilise_gradients(epoch)
        start, end = self.cfg.pretrain.weight_decay, self.cfg.dino.weight_decay_end
        if end is not None:  # the decayed group only: norms and biases stay at 0
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    group["weight_decay"] = cosine_schedule(step, total_steps, start, end)

    def after_step(self, step: int, total_steps: int) -> None:
        self.model.update_teacher(step, total_steps)
