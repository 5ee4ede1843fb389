"""A training set kept on the device: datasets that fit there (CIFAR-10/100, mnist5k) as one
uint8 tensor, augmented a batch at a time on the device (harness.science.device_transforms).

This replaces, for pre-training and the augmented linear probe, the PIL path (a transform per
image in DataLoader workers), which cannot feed a GPU at the rate a small ViT trains on 32-px
images. `data.on_device` decides: None (default) means on CUDA only, when the dataset fits and
the augmentation has a device form (RandSAC's and MAE's, the linear probe's crop + flip; DINO's
multi-crop and fine-tuning's RandAugment stay on the PIL path). The same order of items
(EpochOrder) as the DataLoader path; the augmentation of batch s of epoch e is drawn from a
generator seeded by (seed, e, s), so a run stopped at a step resumes exactly.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from harness.core.catalog import DataError
from harness.core.config import RunConfig
from harness.science.device_transforms import DeviceAugment
from harness.stages.data import CIFAR, MNIST5k, item_seed

FITS_ON_DEVICE = ("mnist5k", *CIFAR)


def cifar_classes() -> tuple[type, ...]:
    from harness.stages.folders import CIFAR_LOADERS  # torchvision: a CIFAR job has imported it already

    return tuple(CIFAR_LOADERS.values())


def uint8_images(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of a mnist5k or CIFAR set, through Subsets."""
    indices = None
    while isinstance(ds, Subset):
        own = np.asarray(ds.indices)
        indices = own if indices is None else own[indices]
        ds = ds.dataset
    if isinstance(ds, MNIST5k):
        images = torch.from_numpy(np.ascontiguousarray(ds.data))[:, None]
    elif isinstance(ds, cifar_classes()):
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
    else:
        raise DataError(f"{type(ds).__name__} does not fit on the device as one tensor; "
                        f"data.on_device works for {', '.join(FITS_ON_DEVICE)}")
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    if indices is not None:
        images, labels = images[torch.as_tensor(indices)], labels[torch.as_tensor(indices)]
    return images.contiguous(), labels


def wanted(cfg: RunConfig, device: torch.device, augment: DeviceAugment | None) -> bool:
    """Whether a stage keeps its training data on the device (see the module's docstring)."""
    if augment is None or cfg.data.name not in FITS_ON_DEVICE:
        return False
    return cfg.data.on_device if cfg.data.on_device is not None else device.type == "cuda"


class DeviceSet:
    """Training images (uint8 (N, C, H, W)) and labels on `device`; `batches` yields augmented batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: DeviceAugment, device: torch.device):
        self.images, self.labels, self.augment = images.to(device), labels.to(device), augment

    @classmethod
    def of(cls, ds: Dataset, augment: DeviceAugment, device: torch.device) -> "DeviceSet":
        """A mnist5k or CIFAR training set (through its Subsets) moved to the device."""
        return cls(*uint8_images(ds), augment, device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: list[int], batch_size: int, seed: int, epoch: int,
                first_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Full batches of `order` (this epoch's items from step `first_step` on), augmented."""
        for k in range(len(order) // batch_size):
            step = first_step + k
            index = torch.as_tensor(order[k * batch_size:(k + 1) * batch_size], device=self.images.device)
            draws = torch.Generator().manual_seed(item_seed(seed, epoch, step))
            yield self.augment(self.images[index], draws), self.labels[index]
