"""Augmentations, following MAE: pre-training, linear probe, fine-tuning, evaluation.

``pretrain_transform`` (random resized crop, scale 0.2-1, + flip), ``probe_transform`` (linear
probe), ``finetune_transform`` (timm's RandAugment recipe; Pillow is pinned to 12, see
pyproject.toml) and ``eval_transform`` (resize only). Each takes the dataset's facts
(harness.core.catalog) and returns a torchvision transform of a PIL image.
"""
from __future__ import annotations

from typing import Callable

from torchvision import transforms

from harness.core.catalog import DatasetInfo

_BICUBIC = transforms.InterpolationMode.BICUBIC


def _to_normalized_tensor(info: DatasetInfo) -> list[Callable]:
    return [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]


def pretrain_transform(info: DatasetInfo, image_size: int, crop_scale: tuple[float, float] | None = (0.2, 1.0),
                       hflip: float = 0.5) -> Callable:
    """MAE pre-training augmentation: random resized crop (scale 0.2-1) + flip, no colour jitter.
    Without `crop_scale`, the whole image at `image_size` (no crop); `hflip` 0: no flip."""
    if crop_scale is None:
        crop = [] if image_size == info.image_size else [transforms.Resize((image_size, image_size), interpolation=_BICUBIC)]
    else:
        crop = [transforms.RandomResizedCrop(image_size, scale=crop_scale, ratio=(3 / 4, 4 / 3), interpolation=_BICUBIC)]
    flip = [transforms.RandomHorizontalFlip(hflip)] if hflip > 0 else []
    return transforms.Compose([*crop, *flip, *_to_normalized_tensor(info)])


def probe_transform(info: DatasetInfo, image_size: int) -> Callable:
    """MAE linear-probe training augmentation: random resized crop (default scale) + flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, interpolation=_BICUBIC),
        transforms.RandomHorizontalFlip(),
        *_to_normalized_tensor(info),
    ])


def eval_transform(info: DatasetInfo, image_size: int) -> Callable:
    """Deterministic: bicubic resize to image_size (only if it differs), then normalize.
    ImageNet: resize the short side to image_size * 256/224, then center-crop (MAE's eval)."""
    if info.name.startswith("imagenet"):
        resize = [transforms.Resize(int(image_size * 256 / 224), interpolation=_BICUBIC),
                  transforms.CenterCrop(image_size)]
    elif image_size == info.image_size:
        resize = []
    else:
        resize = [transforms.Resize((image_size, image_size), interpolation=_BICUBIC)]
    return transforms.Compose([*resize, *_to_normalized_tensor(info)])


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
