"""Methods, one file each, and their registry; a run is the signature of what its method reads.

RandSAC, Table 7's baselines (MAE, DINO, supervised) and the random-init control every table
carries. A method's file holds its `Method` class (harness.science.methods.base): the stages of
its cells, its own settings (a config section named after the method, e.g. `dino`), its
defaults per scale, its checks, how it pre-trains and where its evaluation stages get their
encoder. A new method is one file and one line in `REGISTRY`.

A run is the signature of its config (the dora idea): the same config asked for twice, from
any table, is one run. Each stage has its own signature: it hashes what that stage reads, as its
difference from the defaults (a field at its default does not enter it), so a new field with a
default renames no run. An evaluation stage's signature includes the signature of the
pre-training run it reads, so two tables that probe the same pre-trained model share it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, create_model

from harness.core.config import RUNTIME_FIELDS, RunConfig
from harness.core.fingerprint import Fingerprint, fingerprint
from harness.core.stages import PRETRAIN, declared
from harness.science.methods.base import Method

REGISTRY: dict[str, str] = {  # name -> the module holding its Method
    "randsac": f"{__name__}.randsac",
    "mae": f"{__name__}.mae",
    "dino": f"{__name__}.dino",
    "supervised": f"{__name__}.supervised",  # the fine-tuning recipe from random initialisation
    "random_init": f"{__name__}.random_init",  # the control: a random encoder, evaluated
}
CONTROL = "random_init"
# What an evaluation from random initialisation depends on: the encoder, not the decoder.
ENCODER_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def method(name: str) -> type[Method]:
    """The `Method` class of method `name` (its module imports nothing heavy)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; methods are {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name]).Method


def sections() -> set[str]:
    """The config sections that belong to one method (its settings), by the method's name."""
    return {name for name in REGISTRY if method(name).settings is not None}


@functools.cache
def config_class(name: str) -> type[RunConfig]:
    """RunConfig with the method's own section (named after it) when it has settings."""
    settings = method(name).settings
    if settings is None:
        return RunConfig
    return create_model(f"RunConfig[{name}]", __base__=RunConfig, __module__=__name__,
                        **{name: (settings, settings())})


def validate(raw: dict[str, Any] | BaseModel) -> RunConfig:
    """A run config validated for its method, its checks passed (ValueError / ValidationError).
    Sections of other methods are theirs: an override `dino={...}` reaches DINO's cells only."""
    raw = raw.model_dump() if isinstance(raw, BaseModel) else dict(raw)
    name = raw.get("method", RunConfig.model_fields["method"].default)
    own = method(name)
    cfg = config_class(name).model_validate({k: v for k, v in raw.items() if k == name or k not in REGISTRY})
    own.check(cfg)
    return cfg


def preset(scale: str, name: str) -> dict[str, Any]:
    """What method `name` changes in the preset of `scale` ({} for most)."""
    return method(name).presets.get(scale, {})


def _reads(full: dict[str, Any], cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The part of a dumped config (`full`) that one stage of `cfg` reads."""
    own, spec = method(cfg.method), declared(stage)
    if stage not in own.stages:
        raise ValueError(f"method {cfg.method} has no {stage} stage")
    if not spec.evaluates:
        keys = ("method", "data", "model", stage, *own.reads, *([cfg.method] if own.settings else []), "seed")
        return {"stage": stage, **{k: full[k] for k in keys if k in full}}
    common = {k: full[k] for k in ("data", stage, "seed") if k in full}
    if PRETRAIN not in own.stages:  # from random initialisation: the supervised baseline is the control's run
        encoder = {k: v for k, v in full["model"].items() if k in ENCODER_FIELDS}
        return {"stage": stage, "init": "random", "parent": None, "model": encoder, **common}
    return {"stage": stage, "parent": signature(cfg, PRETRAIN), **common}


def stage_config(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The part of the config one stage reads, without runtime fields: its MLflow params."""
    return _reads(cfg.model_dump(mode="json", exclude=RUNTIME_FIELDS), cfg, stage)


def difference(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """What the stage reads that differs from the defaults: what its signature hashes."""
    return _reads(cfg.model_dump(mode="json", exclude=RUNTIME_FIELDS, exclude_defaults=True), cfg, stage)


def signature(cfg: RunConfig, stage: str) -> str:
    blob = json.dumps(difference(cfg, stage), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def code_fingerprint(name: str, stage: str, root: Path | None = None) -> Fingerprint:
    """The code a `stage` run of method `name` computes with: the fingerprint of the stage's
    module and the method's, with what they import (harness.core.fingerprint), in the package
    at `root` (default: the one imported here). What the config decides is the signature's."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; methods are {', '.join(REGISTRY)}")
    return fingerprint((declared(stage).module, REGISTRY[name]), root)

