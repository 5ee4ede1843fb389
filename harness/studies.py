"""Studies: one YAML file per paper table in studies/, expanded into cells and stage runs.

A study names a dataset, a base config, factors (each a config field and its values), the
metrics of the table (lin -> linprobe stage, ft -> finetune stage), its layout and the paper's
numbers. Its cells are the product of the factors' values; each cell's config is
    scale preset (scale, dataset)  <-  study base  <-  cell factors  <-  user overrides
and the plan maps every stage of every cell to a run signature: the same config is one run.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.config import RunConfig, deep_merge, dotted_to_nested, signature
from harness.scales import SCALES, preset

ROOT = Path(__file__).resolve().parent.parent
STUDIES_DIR = ROOT / "studies"
METRIC_STAGE = {"lin": "linprobe", "ft": "finetune"}
METRIC_NAMES = {"lin": "LIN", "ft": "FT"}


class ConfigError(ValueError):
    """Bad input, reported in one line before anything is submitted."""


class Factor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    field: str  # dotted config path, e.g. segments.size
    values: list[Any] = Field(min_length=1)
    label: str = "{name}={value}"  # how a value reads in the table header


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    columns: list[str]  # factor names whose values make the columns
    rows: Literal["metric"] = "metric"


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    table: int
    caption: str
    dataset: str
    base: dict[str, Any] = {}
    factors: dict[str, Factor]
    metrics: list[Literal["lin", "ft"]] = Field(min_length=1)
    layout: Layout
    seeds: list[int] = [0]
    paper: dict[str, dict[str, float]] = {}  # cell label -> metric -> the paper's number


@dataclass(frozen=True)
class Cell:
    study: str
    label: str
    seed: int
    config: RunConfig

    def signature(self, stage: str) -> str:
        return signature(self.config, stage)


@dataclass
class StageRun:
    stage: str
    signature: str
    config: RunConfig
    parent: str | None
    cells: list[tuple[str, str]] = field(default_factory=list)  # (study, cell label) asking for it


def available_studies(studies_dir: Path = STUDIES_DIR) -> list[str]:
    return sorted(p.stem for p in studies_dir.glob("*.yaml"))


def load_study(name: str, studies_dir: Path = STUDIES_DIR) -> Study:
    path = studies_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown study {name!r}: no {path}; studies are {', '.join(available_studies(studies_dir))}")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        study = Study(name=name, **raw)
    except ValidationError as err:
        raise ConfigError(f"study {name}: {one_line(err)}") from None
    unknown = set(study.layout.columns) - set(study.factors)
    if unknown:
        raise ConfigError(f"study {name}: layout columns {sorted(unknown)} are not factors {sorted(study.factors)}")
    return study


def cell_label(study: Study, values: dict[str, Any]) -> str:
    return ", ".join(study.factors[n].label.format(name=n, value=v) for n, v in values.items())


def expand(study: Study, scale: str, overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every (cell, seed) of a study at a scale, with its validated config.

    `overrides` is a nested dict applied to every cell last, e.g. {"pretrain": {"epochs": 2}}.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)}")
    try:
        base = deep_merge(preset(scale, study.dataset), study.base)
    except ValueError as err:
        raise ConfigError(f"study {study.name}: {err}") from None
    cells = []
    names = list(study.factors)
    for combo in itertools.product(*(study.factors[n].values for n in names)):
        values = dict(zip(names, combo))
        label = cell_label(study, values)
        factor_set = dotted_to_nested({study.factors[n].field: v for n, v in values.items()})
        for seed in study.seeds:
            raw = deep_merge(deep_merge(deep_merge(base, factor_set), {"seed": seed}), overrides or {})
            try:
                config = RunConfig.model_validate(raw)
            except ValidationError as err:
                raise ConfigError(f"study {study.name}, cell {label}: {one_line(err)}") from None
            cells.append(Cell(study.name, label, seed, config))
    return cells


def stages_of(study: Study) -> list[str]:
    return ["pretrain"] + [METRIC_STAGE[m] for m in study.metrics]


def plan(studies: list[Study], scale: str, overrides: dict[str, Any] | None = None) -> dict[str, StageRun]:
    """Signature -> stage run, for every stage of every cell of the given studies."""
    runs: dict[str, StageRun] = {}
    for study in studies:
        for cell in expand(study, scale, overrides):
            parent = cell.signature("pretrain")
            for stage in stages_of(study):
                sig = cell.signature(stage)
                run = runs.setdefault(sig, StageRun(stage, sig, cell.config, None if stage == "pretrain" else parent))
                if (study.name, cell.label) not in run.cells:
                    run.cells.append((study.name, cell.label))
    return runs


def one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
