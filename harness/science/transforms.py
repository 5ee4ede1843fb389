"""Augmentations, following MAE: pre-training, linear probe, fine-tuning, evaluation.

``pretrain_transform`` (random resized crop, scale 0.2-1, + flip), ``probe_transform`` (linear
probe), ``finetune_transform`` (timm's RandAugment recipe; Pillow is pinned to 12, see
pyproject.toml) and ``eval_transform`` (resize only). Each takes the dataset's facts
(harness.core.catalog) and returns a transform of a PIL image ("L" or "RGB") to a normalized
float tensor (C, H, W).

Fine-tuning's is timm's. The other three are torchvision's transforms (RandomResizedCrop,
RandomHorizontalFlip, Resize, CenterCrop, ToTensor, Normalize) written out here, drawing the
same random numbers in the same order and calling the same Pillow operations, so that the same
seed gives the same tensor to the last bit (tests/science/test_transforms.py holds them against
torchvision's): importing torchvision imports its models; with timm's blocks
(harness.science.blocks) that was 0.8 s of every pre-training job's start-up on a 2-core CPU
(docs/findings.md).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from harness.core.catalog import DatasetInfo

MAE_RATIO = (3 / 4, 4 / 3)


FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize(img: Image.Image, height: int, width: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize (antialiased, as Pillow always is) to height x width; unchanged if already so."""
    return img if img.size == (width, height) else img.resize((width, height), FILTERS[interpolation])


class Compose:
    """Apply `steps` in order."""

    def __init__(self, steps: Sequence[Callable]):
        self.transforms = list(steps)

    def __call__(self, img):
        for step in self.transforms:
            img = step(img)
        return img


class Resize:
    """Bicubic resize to (size, size), or, given `short`, the short side to `short` (aspect kept)."""

    def __init__(self, size: int | None = None, short: int | None = None):
        self.size, self.short = size, short

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.size is not None:
            return resize(img, self.size, self.size)
        w, h = img.size
        if w <= h:
            return resize(img, int(self.short * h / w), self.short)
        return resize(img, self.short, int(self.short * w / h))


class CenterCrop:
    """The central size x size window (the image is at least that large after `Resize(short=)`)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if self.size > w or self.size > h:
            raise ValueError(f"a {self.size}-pixel centre crop of a {w}x{h} image")
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return img.crop((left, top, left + self.size, top + self.size))


class RandomResizedCrop:
    """A random window of `scale` of the area and aspect ratio in `ratio` (log-uniform), resized
    to size x size; after 10 misses, the central window of the nearest allowed ratio."""

    interpolation = "bicubic"  # as the on-device crop's (harness.science.device_transforms)

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = MAE_RATIO):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop, from the global torch generator."""
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,)).item()
                left = torch.randint(0, width - w + 1, size=(1,)).item()
                return top, left, h, w
        aspect = width / height
        if aspect < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif aspect > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = self.window(*img.size)
        return resize(img.crop((left, top, left + w, top + h)), self.size, self.size, self.interpolation)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else img


class ToNormalizedTensor:
    """An "L" or "RGB" image -> float32 (C, H, W) in [0, 1], minus `mean`, over `std`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode not in ("L", "RGB"):
            raise ValueError(f"expected an L or RGB image, got mode {img.mode}")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(img.size[1], img.size[0], len(img.getbands()))
        x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)


def pretrain_transform(info: DatasetInfo, image_size: int, crop_scale: tuple[float, float] | None = (0.2, 1.0),
                       hflip: float = 0.5) -> Callable:
    """MAE pre-training augmentation: random resized crop (scale 0.2-1) + flip, no colour jitter.
    Without `crop_scale`, the whole image at `image_size` (no crop); `hflip` 0: no flip."""
    if crop_scale is None:
        crop = [] if image_size == info.image_size else [Resize(image_size)]
    else:
        crop = [RandomResizedCrop(image_size, scale=crop_scale)]
    flip = [RandomHorizontalFlip(hflip)] if hflip > 0 else []
    return Compose([*crop, *flip, ToNormalizedTensor(info.mean, info.std)])


def probe_transform(info: DatasetInfo, image_size: int) -> Callable:
    """MAE linear-probe training augmentation: random resized crop (default scale) + flip."""
    return Compose([RandomResizedCrop(image_size), RandomHorizontalFlip(), ToNormalizedTensor(info.mean, info.std)])


def eval_transform(info: DatasetInfo, image_size: int) -> Callable:
    """Deterministic: bicubic resize to image_size (only if it differs), then normalize.
    ImageNet: resize the short side to image_size * 256/224, then center-crop (MAE's eval)."""
    if info.name.startswith("imagenet"):
        resize_ = [Resize(short=int(image_size * 256 / 224)), CenterCrop(image_size)]
    elif image_size == info.image_size:
        resize_ = []
    else:
        resize_ = [Resize(image_size)]
    return Compose([*resize_, ToNormalizedTensor(info.mean, info.std)])


def finetune_transform(info: DatasetInfo, image_size: int, rand_augment: str | None,
                       crop_scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5) -> Callable:
    """MAE fine-tuning augmentation via timm (e.g. rand_augment="rand-m9-mstd0.5-inc1"):
    random resized crop (timm's default scale 0.08-1), horizontal flip, RandAugment.

    As in MAE, colour jitter is off (``color_jitter=None``; timm's default would add it when
    rand_augment is None) and random erasing is off. timm's ops handle mode "L" images
    natively (fill colour = the 1-channel mean); a test checks this matches the RGB path.
    """
    from timm.data import create_transform

    return create_transform(input_size=image_size, is_training=True, color_jitter=None, scale=crop_scale,
                            hflip=hflip, auto_augment=rand_augment, interpolation="bicubic", re_prob=0.0,
                            mean=info.mean, std=info.std)
