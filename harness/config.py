"""Validated run configuration and its signature.

A run is the signature of its resolved config (the dora idea): the same config asked for
twice, from any table, is one run. Each stage (pretrain, linprobe, finetune) has its own
signature; an evaluation stage's signature includes the signature of the pre-training run it
reads, so two tables that probe the same pre-trained model share the pre-training run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.data import dataset_info

STAGES = ("pretrain", "linprobe", "finetune")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_data_root() -> str:
    """Where file-based datasets live unless data.root says otherwise: $RANDSAC_DATA or ./data."""
    return os.environ.get("RANDSAC_DATA") or str(Path(__file__).resolve().parent.parent / "data")


class DataConfig(_Strict):
    name: Literal["mnist5k", "cifar10", "cifar100"] = "mnist5k"
    root: str = Field(default_factory=default_data_root)  # runtime: where the data lives, not what it is
    image_size: int = Field(32, gt=0)
    train_subset: int | None = Field(None, gt=0)  # first n training images (tiny scale)
    test_subset: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)  # runtime


class ModelConfig(_Strict):
    patch_size: int = Field(4, gt=0)
    embed_dim: int = Field(192, gt=0)
    depth: int = Field(12, gt=0)
    num_heads: int = Field(3, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    decoder_depth: int = Field(3, gt=0)
    decoder_num_heads: int = Field(3, gt=0)
    architecture: Literal["masked"] = "masked"

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        for heads, name in ((self.num_heads, "num_heads"), (self.decoder_num_heads, "decoder_num_heads")):
            if self.embed_dim % heads:
                raise ValueError(f"model.embed_dim={self.embed_dim} is not divisible by model.{name}={heads}")
        return self


class SegmentConfig(_Strict):
    """How the token grid is cut into segments and how segments are serialized (section 3)."""

    kind: Literal["square"] = "square"
    size: int = Field(1, gt=0)  # M: side of a square segment, in tokens (M=1: one token per segment)
    order: Literal["random", "raster"] = "random"


class OptimConfig(_Strict):
    epochs: int = Field(gt=0)
    warmup_epochs: float = Field(0, ge=0)
    batch_size: int = Field(gt=0)
    base_lr: float = Field(gt=0)  # lr = base_lr * batch_size / 256
    min_lr: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "lars", "sgd"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    momentum: float = 0.9  # lars / sgd

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


class PretrainConfig(OptimConfig):
    norm_pix_loss: bool = True


class LinprobeConfig(OptimConfig):
    augment: bool = True  # MAE's RandomResizedCrop+flip; False: features computed once and cached


class FinetuneConfig(OptimConfig):
    layer_decay: float = Field(0.75, gt=0, le=1)
    drop_path: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.8, ge=0)
    cutmix: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    rand_augment: str | None = None  # timm auto_augment string, e.g. "rand-m9-mstd0.5-inc1"


class RunConfig(_Strict):
    data: DataConfig
    model: ModelConfig
    segments: SegmentConfig = SegmentConfig()
    pretrain: PretrainConfig
    linprobe: LinprobeConfig
    finetune: FinetuneConfig
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # runtime

    @model_validator(mode="after")
    def _geometry(self) -> "RunConfig":
        side, p, m = self.data.image_size, self.model.patch_size, self.segments.size
        if side % p:
            raise ValueError(f"model.patch_size={p} does not divide data.image_size={side}")
        grid = side // p
        if grid % m:
            raise ValueError(
                f"segments.size M={m} does not divide the {grid}x{grid} token grid "
                f"(image {side}, patch {p}); choose M among {[d for d in range(1, grid) if grid % d == 0]}")
        if m >= grid:
            raise ValueError(f"segments.size M={m} makes one segment of the {grid}x{grid} grid: nothing to predict")
        if self.pretrain.norm_pix_loss and p * p * dataset_info(self.data.name).channels < 2:
            raise ValueError("pretrain.norm_pix_loss needs at least 2 values per patch (patch_size 1 on a 1-channel dataset)")
        return self

    @property
    def grid_size(self) -> int:
        return self.data.image_size // self.model.patch_size


# Fields that say where or how a run executes, not what it computes: kept out of signatures.
RUNTIME_FIELDS = {"data": {"root", "num_workers"}, "device": True}


def stage_config(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The part of the config one stage reads, without runtime fields: what its signature hashes."""
    full = cfg.model_dump(mode="json", exclude=RUNTIME_FIELDS)
    if stage == "pretrain":
        keys = ("data", "model", "segments", "pretrain", "seed")
        return {"stage": stage, **{k: full[k] for k in keys}}
    if stage in ("linprobe", "finetune"):
        return {"stage": stage, "parent": signature(cfg, "pretrain"), "data": full["data"],
                stage: full[stage], "seed": full["seed"]}
    raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def signature(cfg: RunConfig, stage: str) -> str:
    blob = json.dumps(stage_config(cfg, stage), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- merging

def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dotted_to_nested(flat: dict[str, Any]) -> dict:
    """{"pretrain.epochs": 2} -> {"pretrain": {"epochs": 2}}."""
    nested: dict = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
