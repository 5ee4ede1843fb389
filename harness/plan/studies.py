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
from harness.core.stages import EVALUATIONS, PRETRAIN
from harness.science import methods
from harness.plan.claims import Claim, Comparison, comparisons
from harness.plan.scales import SCALES, starting_config

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
    claims: list[Claim] = []  # the paper's comparisons of these settings (harness.plan.claims)

    @field_validator("metrics")
    @classmethod
    def _declared(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in TABLE_METRIC_STAGE]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; the stages report {', '.join(TABLE_METRIC_STAGE)}")
        return metrics

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        return distinct_seeds(seeds, "seeds")

    def combos(self) -> list[tuple[str, list[str], list[dict]]]:
        """(setting, factor labels, config patches) of every cell, in the study's order. A setting
        template naming no factor is refused in one line."""
        names = list(self.factors)
        out = []
        for combo in itertools.product(*(self.factors[n].variants(n) for n in names)):
            values = {n: value for n, (_, value, _) in zip(names, combo)}
            labels = [label for label, _, _ in combo]
            try:
                setting = self.setting.format(**values) if self.setting else ", ".join(labels) or self.caption
            except (KeyError, IndexError) as err:
                raise ConfigError(f"study {self.name}: setting {self.setting!r} names {{{err.args[0]}}}, which is not "
                                  f"a factor; its factors are {', '.join(names) or 'none'}") from None
            out.append((setting, labels, [patch for _, _, patch in combo]))
        return out

    def settings(self) -> list[str]:
        """The names of the study's cells (their columns or rows in the table)."""
        return [setting for setting, _, _ in self.combos()]

    def comparisons(self) -> list[Comparison]:
        """What its claims compare, expanded (harness.plan.claims); names checked against the study."""
        values = {n: [value for _, value, _ in f.variants(n)] for n, f in self.factors.items()}
        try:
            return comparisons(self.name, self.claims, self.settings(), values, self.metrics, self.datasets,
                               self.reported)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def distinct_seeds(seeds: list[int], what: str) -> list[int]:
    """Seeds as given, refused when one repeats: two cells of one seed are one run counted twice."""
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{what} {seeds} repeats {', '.join(map(str, repeated))}: one seed is one run; "
                         f"list each seed once")
    return seeds


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
        return ([PRETRAIN] if PRETRAIN in own and evals else []) + evals


@dataclass
class StageRun:
    stage: str
    signature: str
    config: RunConfig
    parent: str | None
    cells: list[Cell] = field(default_factory=list)  # every cell asking for it, across studies


def available_studies(studies_dir: Path = STUDIES_DIR) -> list[str]:
    return sorted((p.stem for p in studies_dir.glob("*.yaml")), key=lambda n: (len(n), n))


def check_table_numbers(studies_dir: Path = STUDIES_DIR) -> None:
    """Each study file is one table of the paper: two files saying the same `table:` are refused."""
    seen: dict[int, str] = {}
    for name in available_studies(studies_dir):
        number = (yaml.safe_load((studies_dir / f"{name}.yaml").read_text()) or {}).get("table")
        if number in seen:
            raise ConfigError(f"{studies_dir / name}.yaml and {studies_dir / seen[number]}.yaml both say table: {number}; "
                              f"each study is one table: give one of them its own number")
        seen[number] = name


def load_study(name: str, studies_dir: Path = STUDIES_DIR) -> Study:
    path = studies_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown study {name!r}: no {path}; studies are {', '.join(available_studies(studies_dir))}")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        study = Study(name=name, **raw)
    except ValidationError as err:
        raise ConfigError(f"study {name}: {validation_line(err)}") from None
    for fname, factor in study.factors.items():
        if isinstance(factor.values, list) and not factor.field:
            raise ConfigError(f"study {name}: factor {fname} lists values but names no config field")
    check_numbers(study, path)
    study.comparisons()  # a claim naming what the study does not have is refused here
    return study


def check_numbers(study: Study, path: Path) -> None:
    """The paper's numbers name the study's datasets, cells and metrics: a typo would otherwise
    leave a cell without its paper value, or fail later inside Snakemake."""
    settings = study.settings()
    for key, numbers, known in (("paper", study.paper, settings), ("reported", study.reported, None)):
        for dataset, cells in numbers.items():
            if dataset not in study.datasets:
                raise ConfigError(f"{path}: {key}: dataset {dataset!r} is not one of the study's datasets "
                                  f"({', '.join(study.datasets)})")
            for setting, values in cells.items():
                if known is not None and setting not in known:
                    raise ConfigError(f"{path}: {key}: {dataset}: no cell {setting!r}; the cells are "
                                      f"{', '.join(known)}")
                wrong = [m for m in values if m not in study.metrics]
                if wrong:
                    raise ConfigError(f"{path}: {key}: {dataset}: {setting}: metric {wrong[0]!r} is not one the "
                                      f"table reports ({', '.join(study.metrics)})")


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
    seeds, overrides = cell_seeds(study, seeds, overrides or {})
    combos = study.combos()
    cells = []
    for dataset in study.datasets:
        first = len(cells)
        try:
            start = starting_config(scale, dataset, study.recipe)
        except ValueError as err:
            raise ConfigError(f"study {study.name}: {err}") from None
        study_part = study.base
        if start["data"]["name"] == dataset:  # not at scales where a stand-in replaces the dataset
            study_part = deep_merge(study_part, study.dataset_base.get(dataset, {}))
        study_part = deep_merge(study_part, study.scales.get(scale, {}))
        for setting, labels, patches in combos:
            above = study_part  # everything above the method preset
            for patch in patches:
                above = deep_merge(above, patch)
            method = deep_merge(deep_merge(start, above), overrides or {}).get(
                "method", RunConfig.model_fields["method"].default)
            try:
                raw = deep_merge(deep_merge(start, methods.preset(scale, method)), above)
            except ValueError as err:  # an unknown method
                raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {err}") from None
            for seed in seeds:
                try:
                    config = methods.validate(deep_merge(deep_merge(raw, {"seed": seed}), overrides or {}))
                except ValidationError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {validation_line(err)}") from None
                except ValueError as err:
                    raise ConfigError(f"study {study.name}, cell {dataset}: {setting}: {err}") from None
                cells.append(Cell(study.name, dataset, setting, seed, config, short=", ".join(labels) or setting))
        if controls:
            cells += control_cells(cells[first:])
    return cells


def cell_seeds(study: Study, seeds: list[int] | None, overrides: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """The seeds of a study's cells and the overrides without `seed`: an override `seed=1` is the
    one seed of every cell (seeds [1]), so its runs, names and table say s1. `seed` together with
    `seeds`, or a seed listed twice, is refused in one line."""
    if "seed" in overrides:
        if seeds is not None:
            raise ConfigError(f"seed={overrides['seed']} and seeds={seeds} both given: seed=N is seeds=[N]; "
                              f"give one of them")
        seeds, overrides = [overrides["seed"]], {k: v for k, v in overrides.items() if k != "seed"}
    if seeds is None:
        return study.seeds, overrides
    try:
        return distinct_seeds(list(seeds), "seeds"), overrides
    except ValueError as err:
        raise ConfigError(str(err)) from None


def control_config(config: RunConfig) -> RunConfig:
    """The random-init control of a cell: its config, with a randomly initialised encoder."""
    return methods.validate({**config.model_dump(), "method": methods.CONTROL})


def control_cells(cells: list[Cell]) -> list[Cell]:
    """The random-init controls of one dataset's cells: a randomly initialised encoder of the
    cells' architecture, probed and fine-tuned with their recipes. One control per distinct
    (encoder, data, recipes): "random init", or "random init (<first cell's short name>)" when
    the cells differ in what the control depends on (Table 9: "random init (P=2)")."""
    groups: dict[tuple[str, ...], list[RunConfig]] = {}
    first: dict[tuple[str, ...], Cell] = {}
    for cell in cells:
        config = control_config(cell.config)
        seedless = config.model_copy(update={"seed": 0})
        key = tuple(methods.signature(seedless, stage) for stage in EVALUATIONS)
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
            parent = cell.signature(PRETRAIN) if PRETRAIN in stages else None
            for stage in stages:
                sig = cell.signature(stage)
                run = runs.setdefault(sig, StageRun(stage, sig, cell.config, None if stage == PRETRAIN else parent))
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


def validation_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
