"""Tiny CIFAR-10/100 trees in the real on-disk format, so tests never download.

The real files are Python 2 pickles (protocol 2) of dicts whose keys and strings are Python 2
``str``: loaded with ``encoding="latin1"`` (torchvision) they read as ``str``, with
``encoding="bytes"`` (the CIFAR website's snippet) as ``b"data"``, ``b"labels"``... We write
them the same way. ``data`` is uint8 (N, 3072), each row one image in CHW order (1024 red,
1024 green, 1024 blue, each row-major).

torchvision checks fixed md5 sums; ``cifar_checksums`` points them at the written files.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Iterator
from unittest import mock

import numpy as np
from torchvision import datasets
from torchvision.datasets.utils import calculate_md5

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# name -> (folder, train files, test files, meta file)
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}
_TV = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


class _Py2Str(bytes):
    """Bytes pickled as a Python 2 ``str`` (opcodes SHORT_BINSTRING / BINSTRING)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us add an opcode writer
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)

    dispatch[_Py2Str] = _save_py2str


def _s(text: str) -> _Py2Str:
    return _Py2Str(text.encode("latin1"))


def _dump(path: str, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


@dataclass
class CifarTree:
    """What was written: images (N, 32, 32, 3) uint8 HWC, labels (fine labels for CIFAR-100)."""

    folder: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def write_cifar_tree(root: str | os.PathLike, name: str = "cifar10", n_train: int = 12, n_test: int = 6,
                     seed: int = 0) -> CifarTree:
    """Write a tiny random `name` tree under root, in the real format; returns what was written.

    CIFAR-100's coarse labels are fine // 5 and its label names placeholders (not the real ones).
    """
    folder_name, train_files, test_files, meta_file = LAYOUT[name]
    folder = os.path.join(root, folder_name)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    images = {s: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in (("train", n_train), ("test", n_test))}
    labels = {s: rng.integers(0, num_classes, len(images[s])) for s in images}

    for split, files, what in (("train", train_files, "training"), ("test", test_files, "testing")):
        chunks = np.array_split(np.arange(len(images[split])), len(files))
        for i, (filename, idx) in enumerate(zip(files, chunks)):
            entry = {
                _s("batch_label"): _s(f"{what} batch {i + 1} of {len(files)}"),
                _s("filenames"): [_s(f"{split}_{j:05d}.png") for j in idx],
                _s("data"): images[split][idx].transpose(0, 3, 1, 2).reshape(len(idx), 3072),
            }
            if name == "cifar10":
                entry[_s("labels")] = labels[split][idx].tolist()
            else:
                entry[_s("fine_labels")] = labels[split][idx].tolist()
                entry[_s("coarse_labels")] = (labels[split][idx] // 5).tolist()
            _dump(os.path.join(folder, filename), entry)

    if name == "cifar10":
        meta = {_s("num_cases_per_batch"): len(chunks[0]), _s("label_names"): [_s(c) for c in CIFAR10_CLASSES],
                _s("num_vis"): 3072}
    else:
        meta = {_s("fine_label_names"): [_s(f"fine_{i:02d}") for i in range(100)],
                _s("coarse_label_names"): [_s(f"coarse_{i:02d}") for i in range(20)]}
    _dump(os.path.join(folder, meta_file), meta)
    return CifarTree(folder, images["train"], labels["train"], images["test"], labels["test"])


@contextlib.contextmanager
def cifar_checksums(root: str | os.PathLike, name: str = "cifar10") -> Iterator[None]:
    """Within the block, torchvision's md5 table for `name` holds the md5s of the files now under root."""
    cls = _TV[name]
    folder = os.path.join(root, cls.base_folder)

    def md5(filename: str) -> str:
        return calculate_md5(os.path.join(folder, filename))

    with mock.patch.multiple(cls, train_list=[[f, md5(f)] for f, _ in cls.train_list],
                             test_list=[[f, md5(f)] for f, _ in cls.test_list],
                             meta={**cls.meta, "md5": md5(cls.meta["filename"])}):
        yield
