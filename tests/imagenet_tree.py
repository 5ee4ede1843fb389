"""Tiny ImageNet trees in the real on-disk format (ILSVRC-2012 in ImageFolder layout), so tests
never need ImageNet: ``<root>/imagenet/{train,val}/<wnid>/<name>.JPEG``, one folder per synset,
RGB JPEGs of random pixels. The 1000 synsets are the ImageNet-100 subset's real ones
(harness/core/imagenet100.txt: what the ImageNet-100 reader selects) and 900 made-up wnids
(``n9xxxxxxx``, which no real synset uses): the readers check the count and the subset's names,
not the other names.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from harness.core.catalog import IMAGENET100_CLASSES

IMAGENET1K_CLASSES = 1000


def synsets() -> list[str]:
    made_up = [f"n9{i:07d}" for i in range(IMAGENET1K_CLASSES - len(IMAGENET100_CLASSES))]
    return sorted([*IMAGENET100_CLASSES, *made_up])


def write_imagenet_tree(root: str | os.PathLike, n_train: int = 1, n_val: int = 1, size: int = 64,
                        seed: int = 0) -> list[str]:
    """Write `n_train` / `n_val` random size x size JPEGs per synset under root/imagenet/{train,val};
    returns the synsets. Real ImageNet images are larger than the crops; the transforms resize
    any size, so small ones keep the tree quick to write and to read."""
    rng = np.random.default_rng(seed)
    classes = synsets()
    for split, n in (("train", n_train), ("val", n_val)):
        for wnid in classes:
            folder = os.path.join(root, "imagenet", split, wnid)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{wnid[1:]}{i:02d}.JPEG"
                Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
    return classes
