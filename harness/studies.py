"""Studies: one YAML file per paper table in studies/, expanded into cells and stage runs.

A study names its datasets, a base config, factors (a config field and its values, or named
variants), the metrics of the table (lin -> linprobe stage, ft -> finetune stage), its layout
and the paper's numbers. Its cells are dataset x the product of the factors' values; each cell's
config is
    scale preset (scale, dataset, recipe) <- study base <- per-scale overrides <- factors <- user
and the plan maps every stage of every cell to a run signature: the same config is one run.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.config import RunConfig, deep_merge, dotted_to_nested
from harness.core.metrics import TABLE_METRIC_STAGE
from harness.science import methods
from harness.scales import SCALES, preset

ROOT = Path(__file__).resolve().parent.parent
STUDIES_DIR = ROOT / "studies"


class ConfigError(ValueError):
    """Bad input, reported in one line before anything is submitted."""


class Factor(BaseModel):
    """One axis of a study: a config field and its values, or named variants (label -> config patch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    field: str | None = None  # dotted config path, e.g. segments.size
    values: list[Any] | dict[str, dict[str, Any]]
    label: str = "{name}={value}"  # how a plain value reads in the table

    def variants(self, name: str) -> list[tuple[str, Any, dict]]:
        """(label, value for the setting template, nested config patch) of every value."""
        if isinstance(self.values, dict):
            return [(label, label, patch) for label, patch in self.values.items()]
        return [(self.label.format(name=name, value=v), v, dotted_to_nested({self.field: v})) for v in self.values]


Numbers = dict[str, dict[str, dict[str, float]]]  # dataset -> setting -> metric -> value


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    table: int
    caption: str
    datasets: list[str] = Field(min_length=1)  # the paper's datasets; each cell runs on each
    recipe: str | None = None  # scales.RECIPES; default: the dataset's own
    base: dict[str, Any] = {}
    scales: dict[str, dict[str, Any]] = {}  # per-scale overrides, e.g. smaller images at smoke
    dataset_base: dict[str, dict[str, Any]] = {}  # per-dataset overrides, where that dataset really runs
    factors: dict[str, Factor] = {}
    setting: str | None = None  # the paper's name of a cell, e.g. "square M={M}"; default: its labels
    metrics: list[Literal["lin", "ft"]] = Field(min_length=1)
    rows: Literal["metric", "setting"] = "metric"  # the other one (and datasets) make the columns
    seeds: list[int] = [0]
    paper: Numbers = {}  # the paper's numbers of the cells we run
    reported: Numbers = {}  # other methods' published numbers, printed beside ours, not run


@dataclass(frozen=True)
class Cell:
    study: str
    dataset: str
    setting: str
    seed: int
    config: RunConfig

    @property
    def label(self) -> str:
        return f"{self.dataset}: {self.setting}"

    def signature(self, stage: str) -> str:
        return methods.signature(self.config, stage)

    def stages(self, metrics: list[str]) -> list[str]:
        """The stage runs this cell needs for the given table metrics."""
        wanted = {TABLE_METRIC_STAGE[m] for m in metrics}
        own = methods.spec(self.config.method).stages
        evals = [s for s in own if s in wanted]
        return (["pretrain"] if "pretrain" in own and evals else []) + evals


@dataclass
class StageRun:
    stage: str
    signature: str
    config: RunConfig
    parent: str | None
    cells: list[tuple[str, str]] = field(default_factory=list)  # (study, cell label) asking for it


def available_studies(studies_dir: Path = STUDIES_DIR) -> list[str]:
    return sorted((p.stem for p in studies_dir.glob("*.yaml")), key=lambda n: (len(n), n))


def load_study(name: str, studies_dir: Path = STUDIES_DIR) -> Study:
    path = studies_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown study {name!r}: no {path}; studies are {', '.join(available_studies(studies_dir))}")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        study = Study(name=name, **raw)
    except ValidationError as err:
        raise ConfigError(f"study {name}: {one_line(err)}") from None
    for fname, factor in study.factors.items():
        if isinstance(factor.values, list) and not factor.field:
            raise ConfigError(f"study {name}: factor {fname} lists values but names no config field")
    return study


def expand(study: Study, scale: str, overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every (dataset, cell, seed) of a study at a scale, with its validated config.

    The config of a cell is: scale preset <- study base <- study's per-scale overrides <- the
    cell's factor values <- `overrides` (a nested dict, e.g. {"pretrain": {"epochs": 2}}).
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)}")
    names = list(study.factors)
    combos = list(itertools.product(*(study.factors[n].variants(n) for n in names)))
    cells = []
    for dataset in study.datasets:
        try:
            start = preset(scale, dataset, study.recipe)
        except ValueError as err:
            raise ConfigError(f"study {study.name}: {err}") from None
        base = deep_merge(start, study.base)
        if start["data"]["name"] == dataset:  # not at scales where a stand-in replaces the dataset
            base = deep_merge(base, study.dataset_base.get(dataset, {}))
        base = deep_merge(base, study.scales.get(scale, {}))
        for combo in combos:
            labels = [label for label, _, _ in combo]
            values = {n: value for n, (_, value, _) in zip(names, combo)}
            setting = study.setting.format(**values) if study.setting else ", ".join(labels) or study.caption
            raw = base
            for _, _, patch in combo:
                raw = deep_merge(raw, patch)
            for seed in study.seeds:
                try:
                    config = methods.check(RunConfig.model_validate(
                        deep_merge(deep_merge(raw, {"seed": seed}), overrides or {})))
                except ValidationError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {one_line(err)}") from None
                except ValueError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {err}") from None
                cells.append(Cell(study.name, dataset, setting, seed, config))
    return cells


def plan(studies: list[Study], scale: str, overrides: dict[str, Any] | None = None) -> dict[str, StageRun]:
    """Signature -> stage run, for every stage of every cell of the given studies."""
    runs: dict[str, StageRun] = {}
    for study in studies:
        for cell in expand(study, scale, overrides):
            stages = cell.stages(study.metrics)
            parent = cell.signature("pretrain") if "pretrain" in stages else None
            for stage in stages:
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
