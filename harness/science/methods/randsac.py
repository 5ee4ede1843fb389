"""RandSAC (the paper): predict randomly serialized segments autoregressively, in pixels.

Every image of every step gets fresh segments and a fresh serialization (harness.science.segments,
as the `segments` section says); the model (harness.science.model) is the masked transformer, its
trainable-skip variant or the two-stream one, and the loss is the normalized-pixel MSE over
segments 2..S.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from harness.science.methods.base import Method as Base, check_pixel_targets


class Method(Base):
    reads = ("segments",)

    @classmethod
    def check(cls, cfg) -> None:
        cfg.segments.check(cfg.grid_size)
        check_pixel_targets(cfg)

    @cached_property
    def serializer(self):
        """Segments and serialization of a batch, fresh for every step (as `segments` says)."""
        from harness.science.segments import Serializer

        return Serializer(self.cfg.segments, self.cfg.grid_size)

    def build(self):
        from harness.science.model import randsac

        self.model = randsac(self.cfg.model, self.cfg.data.image_size, self.info.channels)
        return self.model

    def loss(self, batch, epoch: int):
        from harness.core import metrics as names

        imgs, _labels = batch
        ranks = self.serializer(imgs.shape[0]).to(imgs.device)
        loss, floor = self.model.loss(imgs, ranks, self.cfg.pretrain.norm_pix_loss)
        return loss, {names.LOSS_FLOOR: floor}

    def reconstruction(self, imgs, out: Path) -> Path:
        """Input | serialization | prediction of `imgs` under a fixed serialization (seed 0); the
        prediction de-normalized with each target patch's own statistics, the first segment
        (never predicted) showing its input."""
        import torch

        from harness.science.pixel_loss import patchify, unpatchify
        from harness.science.drawing import reconstruction_figure
        from harness.science.segments import serialize

        with torch.no_grad():
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
