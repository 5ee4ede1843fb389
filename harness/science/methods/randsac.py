"""RandSAC (the paper): predict randomly serialized segments autoregressively, in pixels.

Every image of every step gets fresh segments and a fresh serialization (harness.science.segments);
the model (harness.science.model) is the masked transformer, its trainable-skip variant or the
two-stream one, and the loss is the normalized-pixel MSE over segments 2..S.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness.core import metrics as names
from harness.science.methods.base import Method as Base
from harness.science.model import RandSAC, patchify, randsac, unpatchify
from harness.science.pictures import reconstruction_figure
from harness.science.segments import Serializer, serialize


class Method(Base):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.serializer = Serializer(cfg.segments, cfg.grid_size)

    def build(self) -> RandSAC:
        self.model = randsac(self.cfg.model, self.cfg.data.image_size, self.info.channels)
        return self.model

    def loss(self, batch, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        imgs, _labels = batch
        ranks = self.serializer(imgs.shape[0]).to(imgs.device)
        loss, floor = self.model.loss(imgs, ranks, self.cfg.pretrain.norm_pix_loss)
        return loss, {names.LOSS_FLOOR: floor}

    @torch.no_grad()
    def reconstruction(self, imgs: torch.Tensor, out: Path) -> Path:
        """Input | serialization | prediction of `imgs` under a fixed serialization (seed 0); the
        prediction de-normalized with each target patch's own statistics, the first segment
        (never predicted) showing its input."""
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        seg = self.serializer.segmentation(imgs.shape[0], g)
        ranks = serialize(seg, self.cfg.segments.order, g).to(imgs.device)
        pred = self.model(imgs, ranks).float()
        p = self.cfg.model.patch_size
        target = patchify(imgs, p)
        if self.cfg.pretrain.norm_pix_loss:
            pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        pred = torch.where((ranks == 0)[..., None], target, pred)
        return reconstruction_figure(imgs, seg.segments, ranks, unpatchify(pred, p, self.info.channels),
                                     self.info, out)
