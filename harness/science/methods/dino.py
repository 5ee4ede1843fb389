"""Table 7's DINO baseline (Caron et al. 2021) on the same ViT encoder, built from lightly's parts.

Student and teacher encoders with DINO projection heads; the teacher is an exponential moving
average of the student (momentum cosine-scheduled to 1); multi-crop views from lightly's
DINOTransform (2 global + `local_views` local crops; local crops get interpolated position
encodings); lightly's DINOLoss (centering, teacher temperature warm-up). The official training
loop's stabilisers: each parameter's gradient clipped, the head's last layer frozen for the
first epoch(s), weight decay cosine-scheduled up (0.04 -> 0.4 in the official recipe).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.dino_transform import DINOTransform
from lightly.utils.scheduler import cosine_schedule

from harness.core.catalog import DatasetInfo
from harness.core.config import DinoConfig, ModelConfig
from harness.science.methods.base import Method as Base
from harness.science.model import Encoder, init_weights


class DINO(nn.Module):
    def __init__(self, cfg: ModelConfig, dino: DinoConfig, image_size: int, in_chans: int):
        super().__init__()
        self.encoder = Encoder(cfg, image_size, in_chans)
        init_weights(self.encoder)
        def head() -> DINOProjectionHead:
            return DINOProjectionHead(cfg.embed_dim, dino.hidden_dim, dino.bottleneck_dim, dino.out_dim,
                                      freeze_last_layer=dino.freeze_last_layer)

        self.head, self.teacher_head = head(), head()  # weight-normed heads cannot be deep-copied
        self.teacher_head.load_state_dict(self.head.state_dict())
        self.teacher = copy.deepcopy(self.encoder)
        deactivate_requires_grad(self.teacher)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(dino.out_dim, dino.warmup_teacher_temp, dino.teacher_temp,
                                  dino.warmup_teacher_temp_epochs, dino.student_temp)
        self.base_momentum = dino.momentum
        self.clip_grad = dino.clip_grad

    def loss(self, views: list[torch.Tensor], epoch: int) -> torch.Tensor:
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher.features(v)) for v in views[:2]]
        student_out = [self.head(self.encoder.features(v)) for v in views]
        return self.criterion(teacher_out, student_out, epoch=epoch)

    @torch.no_grad()
    def stabilise_gradients(self, epoch: int) -> None:
        """As the official loop: clip each student parameter's gradient norm, then drop the last
        layer's gradients while it is frozen (no update, no weight decay)."""
        if self.clip_grad is not None:
            for p in [*self.encoder.parameters(), *self.head.parameters()]:
                if p.grad is not None:
                    nn.utils.clip_grad_norm_(p, self.clip_grad)
        self.head.cancel_last_layer_gradients(epoch)

    @torch.no_grad()
    def update_teacher(self, step: int, total_steps: int) -> None:
        momentum = cosine_schedule(step, total_steps, self.base_momentum, 1.0)
        update_momentum(self.encoder, self.teacher, momentum)
        update_momentum(self.head, self.teacher_head, momentum)


class MultiCrop:
    """lightly's DINOTransform with the dataset's statistics; 1-channel images go through it as
    grey RGB (every op keeps the channels equal) and come back with one channel."""

    def __init__(self, dino: DinoConfig, info: DatasetInfo, image_size: int, patch_size: int):
        local = dino.local_crop_size or max(patch_size, (image_size // 2) // patch_size * patch_size)
        mean, std = (info.mean * 3, info.std * 3) if info.channels == 1 else (info.mean, info.std)
        self.channels = info.channels
        self.transform = DINOTransform(global_crop_size=image_size, global_crop_scale=dino.global_crop_scale,
                                       local_crop_size=local, local_crop_scale=dino.local_crop_scale,
                                       n_local_views=dino.local_views,
                                       normalize={"mean": list(mean), "std": list(std)})

    def __call__(self, img) -> list[torch.Tensor]:
        views = self.transform(img.convert("RGB"))
        return [v[:1] for v in views] if self.channels == 1 else views


class Method(Base):
    def build(self) -> DINO:
        self.model = DINO(self.cfg.model, self.cfg.dino, self.cfg.data.image_size, self.info.channels)
        return self.model

    def transform(self) -> MultiCrop:
        return MultiCrop(self.cfg.dino, self.info, self.cfg.data.image_size, self.cfg.model.patch_size)

    def device_augment(self) -> None:
        return None  # multi-crop (two global and several local views) stays on the PIL path

    def loss(self, batch, epoch: int) -> torch.Tensor:
        views, _labels = batch
        return self.model.loss(views, epoch)

    def before_step(self, optimizer: torch.optim.Optimizer, epoch: int, step: int, total_steps: int) -> None:
        self.model.stabilise_gradients(epoch)
        start, end = self.cfg.pretrain.weight_decay, self.cfg.dino.weight_decay_end
        if end is not None:  # the decayed group only: norms and biases stay at 0
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    group["weight_decay"] = cosine_schedule(step, total_steps, start, end)

    def after_step(self, step: int, total_steps: int) -> None:
        self.model.update_teacher(step, total_steps)
