"""The run configuration: one validated, frozen section per concern that every method shares.

The stage sections (`pretrain`, `linprobe`, `finetune`) come from the stage declarations
(harness.core.stages); a method's own settings are a section named after it, added by its file
(harness.science.methods). What a run's signature hashes: see `harness.science.methods`. This
module imports nothing heavy (no torch), so configs validate and Snakemake plans without it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

from harness.core.stages import DECLARED, Strict as _Strict


def default_data_root() -> str:
    """Where file-based datasets live unless data.root says otherwise: $RANDSAC_DATA or ./data."""
    return os.environ.get("RANDSAC_DATA") or str(Path(__file__).resolve().parents[2] / "data")  # <repo>/data


class DataConfig(_Strict):
    name: Literal["mnist5k", "cifar10", "cifar100", "imagenet100", "imagenet1k"] = "mnist5k"
    root: str = Field(default_factory=default_data_root)  # runtime: where the data lives, not what it is
    image_size: int = Field(32, gt=0)  # pre-training resolution
    eval_image_size: int | None = Field(None, gt=0)  # linear probe / fine-tuning (Table 8: 192 -> 224)
    train_subset: int | None = Field(None, gt=0)  # first n training images (tiny scale)
    test_subset: int | None = Field(None, gt=0)
    validation: float | None = Field(None, gt=0, lt=1)  # hold out this share of train; evaluate there
    num_workers: int = Field(0, ge=0)  # runtime
    # runtime: pre-training's and the augmented linear probe's images and augmentation on the
    # device (harness.stages.device_data);
    # None: on CUDA, for the datasets that fit there (mnist5k, CIFAR)
    on_device: bool | None = None

    @model_validator(mode="after")
    def _fits_on_device(self) -> "DataConfig":
        if self.on_device and self.name.startswith("imagenet"):
            raise ValueError(f"data.on_device=true: {self.name} does not fit on the device as one tensor "
                             f"(it works for mnist5k, cifar10, cifar100); leave it unset")
        return self


class ModelConfig(_Strict):
    patch_size: int = Field(4, gt=0)
    embed_dim: int = Field(192, gt=0)
    depth: int = Field(12, gt=0)
    num_heads: int = Field(3, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    decoder_depth: int = Field(3, gt=0)
    decoder_num_heads: int = Field(3, gt=0)
    architecture: Literal["masked", "skip", "two_stream"] = "masked"  # Table 10

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        for heads, name in ((self.num_heads, "num_heads"), (self.decoder_num_heads, "decoder_num_heads")):
            if self.embed_dim % heads:
                raise ValueError(f"model.embed_dim={self.embed_dim} is not divisible by model.{name}={heads}")
        return self


class SegmentConfig(_Strict):
    """How the token grid is cut into segments and how they are serialized (section 3, A.2).

    kind=square: M x M tokens (`size`), or K squares (`count`, resolved to M = grid / sqrt(K)
    when the config is validated, so "square 16" and M=2 on an 8x8 grid are one config);
    kind=blob: K Gaussian blobs (`count`). `hierarchy`
    lists the partition counts of coarser levels, e.g. [4] for 16 -> 4. `coherent: false`
    shuffles token membership, keeping each segment's size (Table 5, lower half).
    """

    kind: Literal["square", "blob"] = "square"
    size: int = Field(1, gt=0)  # M
    count: int | None = Field(None, gt=0)  # K
    order: Literal["random", "raster"] = "random"
    coherent: bool = True
    hierarchy: list[int] = []

    def check(self, grid: int) -> None:
        """Raise ValueError if this segmentation does not fit a grid x grid token grid."""
        n = grid * grid
        if self.kind == "square":
            m = self.size
            if grid % m:
                raise ValueError(f"segments.size M={m} does not divide the {grid}x{grid} token grid; "
                                 f"choose M among {[d for d in range(1, grid) if grid % d == 0]}")
            if m >= grid:
                raise ValueError(f"segments.size M={m} makes one segment of the {grid}x{grid} grid: nothing to predict")
            units, side = (grid // m) ** 2, m
        else:
            if self.count is None or self.count < 2:
                raise ValueError("blob segments need segments.count K >= 2")
            if self.count > n:
                raise ValueError(f"segments.count K={self.count} is larger than the {n} tokens of the {grid}x{grid} grid")
            units, side = self.count, None
        for level, count in enumerate(self.hierarchy, start=1):
            if not 2 <= count < units:
                raise ValueError(f"segments.hierarchy level {level}: {count} partitions of {units} units; "
                                 f"each level needs at least 2 and fewer partitions than the level below")
            if self.kind == "square":
                q = round(count ** 0.5)
                if q * q != count or grid % q or (grid // q) % side:
                    raise ValueError(f"segments.hierarchy level {level}: {count} square partitions do not tile "
                                     f"the {grid}x{grid} grid in squares of the level below ({side}x{side} tokens)")
                side = grid // q
            units = count
        if self.hierarchy and not self.coherent:
            raise ValueError("segments.coherent=false (shuffled segments) cannot be grouped into a hierarchy")


class _Shared(_Strict):
    """What every run reads, whatever its method; `RunConfig` adds a section per stage."""

    method: str = "randsac"  # harness.science.methods names them; a method may add a section of its own
    data: DataConfig
    model: ModelConfig
    segments: SegmentConfig = SegmentConfig()  # RandSAC's segments and serialization
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # runtime
    # runtime: torch.compile pre-training's forward (masks built from the ranks included) and
    # fused AdamW. Off unless asked: it pays on no device measured so far (docs/findings.md, compile)
    compile: bool = False

    @model_validator(mode="before")
    @classmethod
    def _square_count_to_size(cls, raw: Any) -> Any:
        """segments {kind: square, count: K} -> {size: grid / sqrt(K)}: one config, one signature."""
        if not isinstance(raw, dict):
            return raw
        seg = raw.get("segments")
        seg = seg.model_dump() if isinstance(seg, BaseModel) else seg
        if not isinstance(seg, dict) or seg.get("kind", "square") != "square" or seg.get("count") is None:
            return raw
        data, model = raw.get("data", {}), raw.get("model", {})
        data = data.model_dump() if isinstance(data, BaseModel) else data
        model = model.model_dump() if isinstance(model, BaseModel) else model
        grid = int(data.get("image_size", 32)) // int(model.get("patch_size", 4))
        k = int(seg["count"])
        side = round(k ** 0.5)
        if side * side != k or grid % side:
            raise ValueError(f"segments.count K={k} squares do not tile the {grid}x{grid} token grid "
                             f"(K must be a square number whose root divides {grid})")
        return {**raw, "segments": {**{k_: v for k_, v in seg.items() if k_ != "count"}, "size": grid // side}}

    @model_validator(mode="after")
    def _geometry(self):
        p = self.model.patch_size
        for name, side in (("image_size", self.data.image_size), ("eval_image_size", self.eval_size)):
            if side % p:
                raise ValueError(f"model.patch_size={p} does not divide data.{name}={side}; "
                                 f"choose among {[d for d in range(1, side + 1) if side % d == 0]}")
        return self

    @property
    def grid_size(self) -> int:
        return self.data.image_size // self.model.patch_size

    @property
    def eval_size(self) -> int:
        return self.data.eval_image_size or self.data.image_size


RunConfig = create_model("RunConfig", __base__=_Shared, __module__=__name__,
                         **{stage.name: (stage.config, ...) for stage in DECLARED})
RunConfig.__doc__ = "A run's whole config: the shared sections and one section per declared stage."


# Fields that say where or how a run executes, not what it computes: kept out of signatures.
RUNTIME_FIELDS = {"data": {"root", "num_workers", "on_device"}, "device": True, "compile": True}


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
