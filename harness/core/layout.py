"""Where everything a run writes lives, in one place.

    results/
      runs/<signature>/   one stage run: config.yaml, checkpoint.pt, encoder.pt, <stage>.json,
                          progress.json, mlflow_run_id, job.json, code.json, submitit/<attempt>/ (job logs),
                          tracking/<stage>.jsonl (what the stage logs, spooled for the store) and .sent,
                          superseded-<when>/ (earlier results, kept when it was redone with newer code)
      code/<hash>/harness/  a snapshot of the package: the code the jobs that name it run
      mlflow.db           the default MLflow store (sqlite); mlartifacts/ its artifacts
      .launch/            <stage>-<signature>-<hash>.json: what a stage job is launched with
      .slurm/             queue-<user>.json: the Slurm queue as the waiting launchers share it
      .warm/              <key>.log: a warm server's log, one line per job it forked (harness.run.warm)
      tables/             <table>.md|.tex|.csv
      preflight/          <target>.md|.csv: the last preflight of a target (a few steps of every run)
      tune/<search>/      Optuna searches: journal, trials, best.yaml

The workflow, the launcher, the stages, the tables, the searches and the Snakefile's output
patterns all take their paths from these two objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class RunFolder:
    """The folder of one stage run (or of one trial's stage)."""

    path: Path

    @property
    def signature(self) -> str:
        return self.path.name

    def result(self, stage: str) -> Path:
        """The stage's final metrics: written last, so its presence means the run finished."""
        return self.path / f"{stage}.json"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    def write_config(self, stage_config: dict, config: dict) -> None:
        """config.yaml: what the run's signature hashes, and its whole resolved config."""
        self.path.mkdir(parents=True, exist_ok=True)
        resolved = {"stage_config": stage_config, "config": config}
        self.config.write_text(yaml.safe_dump(resolved, sort_keys=False))

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def encoder(self) -> Path:
        """The pre-trained encoder's weights, what evaluation stages read."""
        return self.path / "encoder.pt"

    @property
    def progress(self) -> Path:
        """Where a running stage stands: epoch, epochs, last metrics, speed, ETA (after each epoch)."""
        return self.path / "progress.json"

    @property
    def reconstruction(self) -> Path:
        return self.path / "reconstruction.png"

    @property
    def mlflow_run_id(self) -> Path:
        return self.path / "mlflow_run_id"

    @property
    def tracking(self) -> Path:
        """The stage's tracking spool (harness.run.spool): <stage>.jsonl, what it logged, and
        <stage>.sent, how much of it the store holds."""
        return self.path / "tracking"

    @property
    def job(self) -> Path:
        """The last job submitted for this run (cluster, id, submitit folder)."""
        return self.path / "job.json"

    @property
    def code(self) -> Path:
        """The code snapshot the run's jobs run, the one its checkpoint is written by."""
        return self.path / "code.json"

    @property
    def submitit(self) -> Path:
        return self.path / "submitit"

    def superseded(self) -> list[Path]:
        """Earlier results of this run, each in `superseded-<when it finished>/`, kept when the
        run was started over with newer code (`--config rerun=stale`); oldest first."""
        return sorted(p for p in self.path.glob("superseded-*") if p.is_dir())


@dataclass(frozen=True)
class Results:
    """A results folder: every run, the MLflow store, the tables, the searches."""

    root: Path

    def run(self, signature: str) -> RunFolder:
        return RunFolder(self.root / "runs" / signature)

    def result_pattern(self, stage: str) -> str:
        """Snakemake's output pattern of a stage's result, `{sig}` the wildcard."""
        return str(self.run("{sig}").result(stage))

    @property
    def code(self) -> Path:
        """Snapshots of the package, one folder per code version jobs were submitted with."""
        return self.root / "code"

    @property
    def slurm_queue(self) -> Path:
        """The workflow's shared view of the Slurm queue (harness.run.watcher): queue-<user>.json and its lock."""
        return self.root / ".slurm"

    @property
    def warm(self) -> Path:
        """The logs of the warm servers that fork local jobs (harness.run.warm): <key>.log."""
        return self.root / ".warm"

    @property
    def launch(self) -> Path:
        """What each stage job is launched with (config, executor, tracking store, tags): one JSON per job."""
        return self.root / ".launch"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def tracking_lock(self) -> Path:
        return self.root / ".mlflow.lock"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str, ext: str) -> Path:
        return self.tables / f"{name}.{ext}"

    @property
    def preflights(self) -> Path:
        """results/preflight/: <target>.md|.csv, the last preflight of a target; <target>/ its jobs' logs."""
        return self.root / "preflight"

    def preflight(self, target: str, ext: str) -> Path:
        return self.preflights / f"{target}.{ext}"

    def search(self, name: str) -> Path:
        return self.root / "tune" / name
