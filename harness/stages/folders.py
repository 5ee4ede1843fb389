"""The datasets torchvision reads: CIFAR-10/100 and ImageNet in ImageFolder layout.

Imported by harness.stages.data only when a job reads one of them, not by one on mnist5k:
torchvision's package import pulls in its models and torch._dynamo (docs/findings.md).
"""
from __future__ import annotations

from typing import Callable

from torchvision import datasets
from torchvision.datasets.utils import check_integrity

__all__ = ["CIFAR_LOADERS", "ImageNetFolder", "check_integrity"]

CIFAR_LOADERS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


class ImageNetFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, restricted to a fixed class list when one is given."""

    def __init__(self, folder: str, classes: tuple[str, ...] | None, transform: Callable | None = None):
        self.only = classes
        super().__init__(folder, transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, _ = super().find_classes(directory)
        if self.only is not None:
            classes = sorted(set(classes) & set(self.only))
        return classes, {c: i for i, c in enumerate(classes)}
