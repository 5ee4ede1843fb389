"""Methods, one file each, and their registry; a run is the signature of what its method reads.

RandSAC, Table 7's baselines (MAE, DINO, supervised) and the random-init control every table
carries. A method's file holds its `Method`
class: how it pre-trains (model, augmentation, loss, after-step hook) and where its evaluation
stages get their encoder. This registry holds what planning needs without importing torch:
the stage runs of a cell of the method and the config sections its pre-training signature
hashes besides method, data, model, pretrain and seed.

A run is the signature of its resolved config (the dora idea): the same config asked for twice,
from any table, is one run. Each stage has its own signature; an evaluation stage's signature
includes the signature of the pre-training run it reads, so two tables that probe the same
pre-trained model share the pre-training run.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from typing import Any

from harness.core.config import RUNTIME_FIELDS, STAGES, RunConfig


@dataclass(frozen=True)
class Spec:
    stages: tuple[str, ...]  # the stage runs of a cell, in order
    hashes: tuple[str, ...] = ()  # config sections the pre-training signature hashes besides the common ones

    @property
    def pretrains(self) -> bool:
        return "pretrain" in self.stages


REGISTRY: dict[str, Spec] = {
    "randsac": Spec(STAGES, hashes=("segments",)),
    "mae": Spec(STAGES),
    "dino": Spec(STAGES, hashes=("dino",)),
    "supervised": Spec(("finetune",)),  # the fine-tuning recipe from random initialisation
    "random_init": Spec(("linprobe", "finetune")),  # the control: a random encoder probed and fine-tuned
}
CONTROL = "random_init"
# What an evaluation from random initialisation depends on: the encoder, not the decoder.
ENCODER_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def spec(name: str) -> Spec:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; methods are {', '.join(REGISTRY)}")
    return REGISTRY[name]


def load(name: str):
    """The `Method` class of method `name` (imports its file, and torch)."""
    spec(name)
    return importlib.import_module(f"{__name__}.{name}").Method


def check(cfg: RunConfig) -> RunConfig:
    """Raise ValueError unless the config's method exists and the sections it reads fit."""
    if "segments" in spec(cfg.method).hashes:
        cfg.segments.check(cfg.grid_size)
    return cfg


def stage_config(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The part of the config one stage reads, without runtime fields: what its signature hashes."""
    method = spec(cfg.method)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if stage not in method.stages:
        raise ValueError(f"method {cfg.method} has no {stage} stage")
    full = cfg.model_dump(mode="json", exclude=RUNTIME_FIELDS)
    if stage == "pretrain":
        keys = ("method", "data", "model", "pretrain", *method.hashes, "seed")
        return {"stage": stage, **{k: full[k] for k in keys}}
    if not method.pretrains:  # from random initialisation: the supervised baseline is the control's run
        return {"stage": stage, "init": "random", "parent": None, "data": full["data"],
                "model": {k: full["model"][k] for k in ENCODER_FIELDS}, stage: full[stage], "seed": full["seed"]}
    return {"stage": stage, "parent": signature(cfg, "pretrain"), "data": full["data"],
            stage: full[stage], "seed": full["seed"]}


def signature(cfg: RunConfig, stage: str) -> str:
    blob = json.dumps(stage_config(cfg, stage), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
