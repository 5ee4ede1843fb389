"""Batched pre-training augmentation on the device, for datasets that fit there as one uint8 tensor.

The same augmentation as ``harness.science.transforms.pretrain_transform`` (random resized crop,
horizontal flip, to [0, 1], normalise), done for a whole batch at once on the images' device
(CIFAR-10/100, MNIST: 32x32 images) instead of per image with PIL in DataLoader workers.

* ``crop_params`` draws the crop boxes with torchvision's ``RandomResizedCrop.get_params``
  algorithm, vectorised: the same distribution, not the same random stream.
* ``resized_crop`` resamples each box with ``grid_sample``. It matches torchvision's tensor path
  (``v2.functional.resized_crop``, i.e. ``interpolate``, antialias off) to float rounding: the box
  is first gathered with its edge pixels repeated, so bicubic taps beyond the box read the box's
  edge as ``interpolate`` does on the cropped tensor, not the neighbouring pixels.
* It does not match the PIL path exactly: PIL's bicubic uses a = -0.5 (torch: -0.75) and
  renormalises the kernel at the edges, and PIL antialiases when downsampling (here never: a
  32-px image cropped and resized to 32 px is always upsampled).
* ``DeviceAugment`` draws every random number on the CPU from one ``torch.Generator``, so a batch
  depends only on the generator's state: restoring a checkpointed state resumes exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def crop_params(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n` random-resized-crop boxes (top, left, h, w), int64 CPU tensors, as torchvision draws them:
    10 attempts of area * U(scale) at a log-uniform aspect ratio, the first that fits is kept,
    else the central crop with the ratio clamped into `ratio`."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    target = area * torch.empty(n, 10).uniform_(scale[0], scale[1], generator=generator).double()
    aspect = torch.exp(torch.empty(n, 10).uniform_(log_ratio[0].item(), log_ratio[1].item(),
                                                   generator=generator).double())
    w_try = torch.round(torch.sqrt(target * aspect)).long()  # round half to even, like Python's round
    h_try = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w_try > 0) & (w_try <= width) & (h_try > 0) & (h_try <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 if none does)
    found = fits.any(dim=1)

    fallback_h, fallback_w = height, width  # torchvision's fallback: central crop, ratio clamped
    if width / height < min(ratio):
        fallback_h = int(round(width / min(ratio)))
    elif width / height > max(ratio):
        fallback_w = int(round(height * max(ratio)))
    h = torch.where(found, h_try.gather(1, first).squeeze(1), fallback_h)
    w = torch.where(found, w_try.gather(1, first).squeeze(1), fallback_w)

    def offset(room: torch.Tensor) -> torch.Tensor:  # uniform in {0, ..., room}
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.minimum((u * (room + 1)).floor().long(), room)

    top = torch.where(found, offset(height - h), (height - h) // 2)
    left = torch.where(found, offset(width - w), (width - w) // 2)
    return top, left, h, w


def resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                 size: int, interpolation: str = "bicubic", flip: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's box resampled to size x size: float32 (N, C, size, size) in [0, 1] on the
    images' device. `images`: uint8 (N, C, H, W); `flip`: optional bool (N,), mirrors those outputs."""
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', not {interpolation!r}")
    n, c, height, width = images.shape
    device = images.device
    top, left, h, w = (t.to(device) for t in (top, left, h, w))

    # Move each box to the top-left corner of an H x W canvas, its last row and column repeated
    # beyond it: with border padding, every sampling tap then reads what interpolate reads on the
    # cropped tensor alone.
    rows = top[:, None] + torch.minimum(torch.arange(height, device=device)[None], h[:, None] - 1)
    cols = left[:, None] + torch.minimum(torch.arange(width, device=device)[None], w[:, None] - 1)
    canvas = images.gather(2, rows[:, None, :, None].expand(n, c, height, width))
    canvas = canvas.gather(3, cols[:, None, None, :].expand(n, c, height, width)).float()

    # Output pixel o samples the box at (o + 0.5) * w / size - 0.5 (interpolate, align_corners=False),
    # in the canvas's normalised coordinates: base * w / W + (w / W - 1), base = (2o + 1) / size - 1.
    base = (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1
    sx, sy = w.float() / width, h.float() / height
    mirror = 1 - 2 * flip.to(device).float() if flip is not None else torch.ones_like(sx)
    grid_x = (mirror * sx)[:, None] * base[None] + (sx - 1)[:, None]
    grid_y = sy[:, None] * base[None] + (sy - 1)[:, None]
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)
    out = F.grid_sample(canvas, grid, mode=interpolation, padding_mode="border", align_corners=False)
    return (out / 255).clamp_(0, 1)


class DeviceAugment:
    """Random resized crop + horizontal flip + normalise, batched on the images' device.

    `crop_scale` None: no crop, the whole image (bicubic-resized only if `image_size` differs).
    Random draws come from the CPU generator passed to each call, so they depend on its state only.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], image_size: int,
                 crop_scale: tuple[float, float] | None = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, interpolation: str = "bicubic"):
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self.image_size, self.crop_scale, self.ratio = image_size, crop_scale, ratio
        self.hflip, self.interpolation = hflip, interpolation

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`images`: uint8 (N, C, H, W) on any device -> normalised float32 (N, C, image_size, image_size)."""
        n, _, height, width = images.shape
        if self.crop_scale is not None:
            box = crop_params(n, height, width, self.crop_scale, self.ratio, generator)
            interpolation = self.interpolation
        else:
            box = (torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
                   torch.full((n,), height), torch.full((n,), width))
            interpolation = "bicubic"
        flip = torch.rand(n, generator=generator) < self.hflip
        if self.crop_scale is None and (height, width) == (self.image_size, self.image_size):
            out = images.float() / 255
            out = torch.where(flip.to(images.device)[:, None, None, None], out.flip(-1), out)
        else:
            out = resized_crop(images, *box, self.image_size, interpolation, flip)
        mean = self.mean.to(images.device)[:, None, None]
        std = self.std.to(images.device)[:, None, None]
        return (out - mean) / std
