"""Pixels as prediction targets: images as patch tokens and back, and the normalized-pixel loss
RandSAC and MAE minimise (MAE's `norm_pix_loss`), with its floor. Shapes: B images, N tokens in
raster order, P the patch size, C the channels.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C), tokens in raster order, pixels (row, col, channel)."""
    return rearrange(imgs, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, N, P*P*C) -> (B, C, H, W) on a square grid of tokens."""
    g = math.isqrt(tokens.shape[1])
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=g, w=g, p=p, q=p, c=channels)


def pixel_targets(imgs: torch.Tensor, patch_size: int, norm_pix: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C): each patch normalized by its own mean and (unbiased)
    variance + 1e-6, as MAE; the raw pixels without `norm_pix`."""
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


def normalized_pixel_loss(pred: torch.Tensor, imgs: torch.Tensor, predicted: torch.Tensor,
                          patch_size: int, norm_pix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, floor). loss: the MSE of `pred` (B, N, P*P*C) to the pixel targets, averaged over
    the predicted tokens (`predicted`, (B, N) bool). floor: the same loss of an all-zero
    prediction on the same tokens, the model that learned nothing (with `norm_pix`, each
    patch's own mean). A loss that stays near its floor has learned nothing."""
    target = pixel_targets(imgs, patch_size, norm_pix)
    weights = predicted.float()
    count = weights.sum()
    loss = ((pred - target).pow(2).mean(dim=-1) * weights).sum() / count
    with torch.no_grad():
        floor = (target.float().pow(2).mean(dim=-1) * weights).sum() / count
    return loss, floor
