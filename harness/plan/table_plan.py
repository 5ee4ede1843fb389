"""The plan of one table: what rendering it needs, written by the workflow, read by harness.report.tables.

Snakemake writes it from the plan it already holds (harness.workflow.plan.Plan.write_table_plan) to
results/tables/<table>.plan.json; the table rule reads it and the result files of the runs it
names (results/runs/<signature>/<stage>.json), nothing else: neither the tracking store nor the
study again. The file (JSON, `TablePlan`):

    format      1
    study       name, table (its number), caption, datasets (the paper's), metrics (lin, ft),
                rows (the layout: "metric" or "setting"), paper and reported (the numbers:
                dataset -> setting -> metric -> value), claims (the paper's comparisons, expanded:
                harness.plan.claims.Comparison)
    scale       tiny | smoke | paper
    results     the results folder the signatures live in (relative to where Snakemake runs)
    cells       in the study's order, each: dataset (the paper's column), setting, short, seed,
                control (the random-init control, not a cell of the paper), config (the facts the
                caption's details name, in RunConfig's shape: data.name (what ran), data.image_size,
                eval_size, model.depth/embed_dim/num_heads/patch_size/decoder_depth, and
                <stage>.epochs of every declared stage), runs (stage -> signature of each stage run of
                the cell, in the order they run) and control_runs (evaluation stage -> signature
                of the same stage of the cell's own random-init control, when the table has it),
                method (what it pre-trains with)
    code        today's code fingerprint of each (method, stage) of its cells, `<method>/<stage>` ->
                fingerprint and hash per module (harness.core.fingerprint): a run whose result
                recorded other code is stale, and the table marks its cell (harness.plan.stale)

Its digest is what Snakemake compares: the same settings asked again write no new plan and
redo no table; a change of what the table shows (a cell, a seed, a number of the paper, a fact
of the caption, today's code of its runs, which decides which cells are stale) does. An edit
that changes no run's code (a comment, a table-rendering module) changes no digest.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, create_model

from harness.core.fingerprint import Fingerprint
from harness.core.stages import DECLARED, PRETRAIN
from harness.science import methods
from harness.plan.claims import Comparison
from harness.plan.studies import Cell, Study, control_config

FORMAT = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Read(BaseModel):
    """A projection of a config section: reads the fields it names, ignores the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True, from_attributes=True)


class _Data(_Read):
    name: str
    image_size: int


class _Model(_Read):
    depth: int
    embed_dim: int
    num_heads: int
    patch_size: int
    decoder_depth: int


class _Epochs(_Read):
    epochs: int


class _Facts(_Read):
    data: _Data
    eval_size: int
    model: _Model

    @classmethod
    def of(cls, config) -> "CellFacts":
        return cls.model_validate(config, from_attributes=True)


# What a table's details say about a cell's config, in RunConfig's names and shape (the details
# read a RunConfig and these alike): the data, the model and every declared stage's epochs.
CellFacts = create_model("CellFacts", __base__=_Facts, __module__=__name__,
                         **{stage.name: (_Epochs, ...) for stage in DECLARED})


Numbers = dict[str, dict[str, dict[str, float]]]  # dataset -> setting -> metric -> value


class TableStudy(_Frozen):
    """What of a study the table prints: its name, number, caption, columns, layout and numbers."""

    name: str
    table: int
    caption: str
    datasets: list[str]
    metrics: list[str]
    rows: Literal["metric", "setting"]
    paper: Numbers
    reported: Numbers
    claims: list[Comparison] = []  # the paper's claims, expanded: what the table's claims section checks

    @classmethod
    def of(cls, study: Study) -> "TableStudy":
        return cls.model_validate({**study.model_dump(include=set(cls.model_fields) - {"claims"}),
                                   "claims": study.comparisons()})


class PlannedCell(_Frozen):
    dataset: str  # the paper's column; config.data.name is what ran
    setting: str
    short: str
    seed: int
    control: bool
    config: CellFacts
    runs: dict[str, str]  # stage -> signature, in the order they run
    control_runs: dict[str, str] = {}  # evaluation stage -> signature of its own control's run
    method: str = ""  # a plan written before cells named it: "" (no code to compare)


class PlannedCode(_Frozen):
    """Today's code of one (method, stage): its fingerprint and hash per module."""

    fingerprint: str
    modules: dict[str, str]

    def of(self) -> Fingerprint:
        return Fingerprint(self.fingerprint, dict(self.modules))


class TablePlan(_Frozen):
    format: Literal[1] = FORMAT
    study: TableStudy
    scale: str
    results: str
    cells: list[PlannedCell]
    code: dict[str, PlannedCode] = {}  # "<method>/<stage>" -> today's code of those runs

    def today(self, method: str, stage: str) -> Fingerprint | None:
        """Today's code of a `stage` run of `method`, as planned (None: not in the plan)."""
        code = self.code.get(f"{method}/{stage}")
        return code.of() if code else None

    def inputs(self) -> list[tuple[str, str]]:
        """(stage, signature) of every run the table reads, each once, in the cells' order."""
        found = {(stage, sig): None for c in self.cells for stage, sig in c.runs.items()}
        found |= {(stage, sig): None for c in self.cells for stage, sig in c.control_runs.items()}
        return list(found)

    def digest(self) -> str:
        """A hash of the whole content: what Snakemake compares to decide whether to rewrite it."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: Path | str) -> "TablePlan":
        return cls.model_validate_json(Path(path).read_text())


def table_plan(study: Study, scale: str, cells: list[Cell], results: Path | str) -> TablePlan:
    """The plan of `study`'s table from its expanded cells (harness.plan.studies.expand, controls
    included or not). A cell's control_runs name only controls among `cells`: the table reads
    no run its plan does not hold."""
    runs = [{stage: cell.signature(stage) for stage in cell.stages(study.metrics)} for cell in cells]
    of_controls = {(stage, sig) for cell, own in zip(cells, runs) if cell.control for stage, sig in own.items()}
    planned = []
    for cell, own in zip(cells, runs):
        control = {}
        if of_controls and not cell.control:
            config = control_config(cell.config)
            theirs = {stage: methods.signature(config, stage) for stage in own if stage != PRETRAIN}
            control = {stage: sig for stage, sig in theirs.items() if (stage, sig) in of_controls}
        planned.append(PlannedCell(dataset=cell.dataset, setting=cell.setting, short=cell.short, seed=cell.seed,
                                   control=cell.control, config=CellFacts.of(cell.config), runs=own,
                                   control_runs=control, method=cell.config.method))
    code = {f"{c.method}/{stage}": PlannedCode(**methods.code_fingerprint(c.method, stage).to_json())
            for c in planned for stage in c.runs}
    return TablePlan(study=TableStudy.of(study), scale=scale, results=str(results), cells=planned,
                     code=dict(sorted(code.items())))
