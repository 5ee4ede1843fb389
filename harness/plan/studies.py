"""Studies: one YAML file per paper table in studies/, expanded into cells and stage runs.

A study names its datasets, a base config, factors (a config field and its values, or named
variants), the metrics of the table (lin -> linprobe stage, ft -> finetune stage), its layout
and the paper's numbers. Its cells are dataset x the product of the factors' values; each cell's
config is
    scale preset (scale, dataset, recipe) <- method preset <- study base <- per-dataset and
    per-scale overrides <- factors <- user
(the method preset: what the method's file changes at that scale, e.g. a baseline's official
optimizer recipe: `Method.presets`)
and the plan maps every stage of every cell to a run signature: the same config is one run.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.core.config import RunConfig, deep_merge, dotted_to_nested
from harness.core.metrics import TABLE_METRIC_STAGE
from harness.science import methods
from harness.plan.scales import SCALES, preset

ROOT = Path(__file__).resolve().parents[2]  # the repository: studies/ lives there
STUDIES_DIR = ROOT / "studies"
CONTROL_SETTING = "random init"


class ConfigError(ValueError):
    """Bad input, reported in one line before anything is submitted."""


class Factor(BaseModel):
    """One axis of a study: a config field and its values, or named variants (label -> config patch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    field: str | None = None  # dotted config path, e.g. segments.size
    values: list[Any] | dict[str, dict[str, Any]]
    label: str = "{name}={value}"  # how a plain value reads in the table

    def fields(self) -> set[str]:
        """The dotted config fields this factor sets in its cells."""
        if isinstance(self.values, dict):
            return {path for patch in self.values.values() for path in flatten_keys(patch)}
        return {self.field}

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
    metrics: list[str] = Field(min_length=1)  # the table metrics of declared stages: lin, ft
    rows: Literal["metric", "setting"] = "metric"  # the other one (and datasets) make the columns
    seeds: list[int] = [0]
    paper: Numbers = {}  # the paper's numbers of the cells we run
    reported: Numbers = {}  # other methods' published numbers, printed beside ours, not run

    @field_validator("metrics")
    @classmethod
    def _declared(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in TABLE_METRIC_STAGE]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; the stages report {', '.join(TABLE_METRIC_STAGE)}")
        return metrics


@dataclass(frozen=True)
class Cell:
    study: str
    dataset: str
    setting: str
    seed: int
    config: RunConfig
    control: bool = False  # the random-init control, not a cell of the paper
    short: str = ""  # what tells it from the other cells: its factors' labels, e.g. "M=2"

    @property
    def label(self) -> str:
        return f"{self.dataset}: {self.setting}"

    def signature(self, stage: str) -> str:
        return methods.signature(self.config, stage)

    def stages(self, metrics: list[str]) -> list[str]:
        """The stage runs this cell needs for the given table metrics."""
        wanted = {TABLE_METRIC_STAGE[m] for m in metrics}
        own = methods.method(self.config.method).stages
        evals = [s for s in own if s in wanted]
        return (["pretrain"] if "pretrain" in own and evals else []) + evals


@dataclass
class StageRun:
    stage: str
    signature: str
    config: RunConfig
    parent: str | None
    cells: list[Cell] = field(default_factory=list)  # every cell asking for it, across studies


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


def expand(study: Study, scale: str, overrides: dict[str, Any] | None = None, *,
           seeds: list[int] | None = None, controls: bool = True) -> list[Cell]:
    """Every (dataset, cell, seed) of a study at a scale, with its validated config.

    The config of a cell is: scale preset <- its method's preset <- study base <- study's
    per-scale overrides <- the cell's factor values <- `overrides` (a nested dict, e.g.
    {"pretrain": {"epochs": 2}}).
    `seeds` replaces the study's seeds. With `controls`, each dataset also gets its random-init
    control cells (`control_cells`).
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)}")
    names = list(study.factors)
    combos = list(itertools.product(*(study.factors[n].variants(n) for n in names)))
    cells = []
    for dataset in study.datasets:
        first = len(cells)
        try:
            start = preset(scale, dataset, study.recipe)
        except ValueError as err:
            raise ConfigError(f"study {study.name}: {err}") from None
        study_part = study.base
        if start["data"]["name"] == dataset:  # not at scales where a stand-in replaces the dataset
            study_part = deep_merge(study_part, study.dataset_base.get(dataset, {}))
        study_part = deep_merge(study_part, study.scales.get(scale, {}))
        for combo in combos:
            labels = [label for label, _, _ in combo]
            values = {n: value for n, (_, value, _) in zip(names, combo)}
            setting = study.setting.format(**values) if study.setting else ", ".join(labels) or study.caption
            above = study_part  # everything above the method preset
            for _, _, patch in combo:
                above = deep_merge(above, patch)
            method = deep_merge(deep_merge(start, above), overrides or {}).get(
                "method", RunConfig.model_fields["method"].default)
            try:
                raw = deep_merge(deep_merge(start, methods.preset(scale, method)), above)
            except ValueError as err:  # an unknown method
                raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {err}") from None
            for seed in seeds if seeds is not None else study.seeds:
                try:
                    config = methods.validate(deep_merge(deep_merge(raw, {"seed": seed}), overrides or {}))
                except ValidationError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {one_line(err)}") from None
                except ValueError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {err}") from None
                cells.append(Cell(study.name, dataset, setting, seed, config, short=", ".join(labels) or setting))
        if controls:
            cells += control_cells(cells[first:])
    return cells


def control_config(config: RunConfig) -> RunConfig:
    """The random-init control of a cell: its config, with a randomly initialised encoder."""
    return methods.validate({**config.model_dump(), "method": methods.CONTROL})


def control_cells(cells: list[Cell]) -> list[Cell]:
    """The random-init controls of one dataset's cells: a randomly initialised encoder of the
    cells' architecture, probed and fine-tuned with their recipes. One control per distinct
    (encoder, data, recipes): "random init", or "random init (<first cell's short name>)" when
    the cells differ in what the control depends on (Table 9: "random init (P=2)")."""
    groups: dict[tuple[str, str], list[RunConfig]] = {}
    first: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        config = control_config(cell.config)
        seedless = config.model_copy(update={"seed": 0})
        key = (methods.signature(seedless, "linprobe"), methods.signature(seedless, "finetune"))
        first.setdefault(key, cell)
        if all(c.seed != config.seed for c in groups.setdefault(key, [])):
            groups[key].append(config)
    out = []
    for key, configs in groups.items():
        one = len(groups) == 1
        setting = CONTROL_SETTING if one else f"{CONTROL_SETTING} ({first[key].short})"
        out += [Cell(cells[0].study, cells[0].dataset, setting, c.seed, c, control=True, short=setting) for c in configs]
    return out


def plan(studies: list[Study], scale: str, overrides: dict[str, Any] | None = None, *,
         seeds: list[int] | None = None, controls: bool = True) -> dict[str, StageRun]:
    """Signature -> stage run, for every stage of every cell of the given studies."""
    runs: dict[str, StageRun] = {}
    for study in studies:
        check_overrides(study, overrides or {})
        for cell in expand(study, scale, overrides, seeds=seeds, controls=controls):
            stages = cell.stages(study.metrics)
            parent = cell.signature("pretrain") if "pretrain" in stages else None
            for stage in stages:
                sig = cell.signature(stage)
                run = runs.setdefault(sig, StageRun(stage, sig, cell.config, None if stage == "pretrain" else parent))
                if all((c.study, c.label) != (cell.study, cell.label) for c in run.cells):
                    run.cells.append(cell)
    return runs


def flatten_keys(d: dict, prefix: str = "") -> list[str]:
    """{"segments": {"kind": "blob"}} -> ["segments.kind"]."""
    out = []
    for key, value in d.items():
        path = f"{prefix}{key}"
        out += flatten_keys(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


def check_overrides(study: Study, overrides: dict[str, Any]) -> None:
    """Refuse an override that sets a field the study varies: it would make every cell one run
    while the columns still read as the ablation."""
    for path in flatten_keys(overrides):
        for name, factor in study.factors.items():
            clash = [f for f in sorted(factor.fields()) if f == path or f.startswith(path + ".") or path.startswith(f + ".")]
            if clash:
                raise ConfigError(f"override {path} sets what {study.name} varies (factor {name}: {', '.join(clash)}): "
                                  f"every cell would be the same run; drop it, or ask for a table that does not vary it")


def one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
