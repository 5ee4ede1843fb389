"""Table 7's DINO baseline on RandSAC's encoder, from lightly's parts, and its multi-crop views.

DINO (Caron et al. 2021): student and teacher encoders with DINO projection heads; the teacher
an exponential moving average of the student (momentum cosine-scheduled to 1); multi-crop views
from lightly's DINOTransform (2 global + local crops; local crops get interpolated position
encodings); lightly's DINOLoss (centering, teacher temperature warm-up); the official loop's
gradient clipping and frozen last layer. Its settings and recipe: harness.science.methods.dino.
lightly (and the torchvision it imports) load with this module only.
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
from harness.core.config import ModelConfig
from harness.science.encoder import Encoder, init_weights


class DINO(nn.Module):
    def __init__(self, cfg: ModelConfig, dino, image_size: int, in_chans: int):
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

    def __init__(self, dino, info: DatasetInfo, image_size: int, patch_size: int):
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
