"""Static facts about the datasets: names, channels, classes, statistics. Imports nothing heavy,
so configs validate (and Snakemake plans) without loading torch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """A dataset is unknown, or its files are missing or corrupt."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int


DATASETS: tuple[str, ...] = ("mnist5k", "cifar10", "cifar100", "imagenet100", "imagenet1k")

# mnist5k mean/std: pixel statistics (in [0, 1]) of the padded 32x32 train split; checked by a test.
_INFO = {
    "mnist5k": DatasetInfo("mnist5k", 1, 32, 10, (0.1002,), (0.2752,), 4000, 1000),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50000, 10000),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50000, 10000),
    "imagenet100": DatasetInfo("imagenet100", 3, 224, 100, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 126689, 5000),
    "imagenet1k": DatasetInfo("imagenet1k", 3, 224, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1281167, 50000),
}
# The standard ImageNet-100 subset (Tian et al. 2020, CMC): 100 ImageNet-1K synsets.
IMAGENET100_CLASSES: tuple[str, ...] = tuple(
    (Path(__file__).with_name("imagenet100.txt")).read_text().split())


def dataset_info(name: str) -> DatasetInfo:
    """Static facts about dataset `name` (no file access)."""
    if name not in _INFO:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return _INFO[name]
