"""MLflow: one run per stage, tagged with what links it to its table cells.

The store is a value every job is given: the `tracking_uri` of the workflow's config, else
`MLFLOW_TRACKING_URI`, else `results/mlflow.db` (sqlite, artifacts in `results/mlartifacts`).
A restarted stage (requeue, crash) continues the MLflow run it started, whose id lives in its
run folder.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from harness.core.layout import Results, RunFolder

EXPERIMENT = "randsac-harness"
T = TypeVar("T")


def retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.5) -> T:
    """Retry a tracking call; sqlite answers 'database is locked' while another job writes."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException, sqlalchemy OperationalError, connection errors
            if i == attempts - 1 or "locked" not in str(err).lower() and "connection" not in str(err).lower():
                raise
            time.sleep(delay * 2 ** i)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Store:
    """A tracking store: its URI and the results folder it belongs to."""

    uri: str
    results: Results

    @classmethod
    def of(cls, results: Results | Path, uri: str | None = None) -> "Store":
        results = results if isinstance(results, Results) else Results(Path(results))
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{results.mlflow_db.resolve()}"
        return cls(uri, results)

    @property
    def local(self) -> bool:
        return self.uri.startswith("sqlite:")

    @contextmanager
    def creation_lock(self):
        """Serialize the creation of a sqlite store: concurrent first jobs would each create its tables."""
        if not self.local:
            yield
            return
        lock_path = self.results.tracking_lock
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def client(self):
        """A client of the store; creating a new sqlite store is serialized."""
        import mlflow

        with self.creation_lock():
            return mlflow.MlflowClient(self.uri)

    def experiment_id(self) -> str:
        """Create the store and the experiment once (a local store keeps artifacts beside it); its id."""
        c = self.client()
        with self.creation_lock():
            exp = retry(lambda: c.get_experiment_by_name(EXPERIMENT))
            if exp is not None:
                return exp.experiment_id
            artifacts = self.results.mlartifacts.resolve().as_uri() if self.local else None
            return retry(lambda: c.create_experiment(EXPERIMENT, artifact_location=artifacts))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class StageTracker:
    """Start or continue the MLflow run of one stage; log per-epoch metrics and artifacts."""

    def __init__(self, store: Store, run: RunFolder, tags: dict[str, str], params: dict[str, Any]):
        self.store, self.run = store, run
        self.tags, self.params = tags, params
        self.client = None
        self.run_id: str | None = None

    def __enter__(self) -> "StageTracker":
        self.client = self.store.client()
        id_file = self.run.mlflow_run_id
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
        else:
            exp = self.store.experiment_id()
            run = retry(lambda: self.client.create_run(exp, tags={**self.tags, "git_commit": git_commit()},
                                                       run_name=self.tags.get("mlflow.runName")))
            self.run_id = run.info.run_id
            params = [(k, str(v)[:6000]) for k, v in flatten(self.params).items()]
            from mlflow.entities import Param

            for i in range(0, len(params), 100):
                chunk = [Param(k, v) for k, v in params[i:i + 100]]
                retry(lambda: self.client.log_batch(self.run_id, params=chunk))
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id)
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: Path) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path)))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"  # preemption / requeue: the run continues on restart
        else:
            status = "FAILED" if exc_type is not None else "FINISHED"
        retry(lambda: self.client.set_terminated(self.run_id, status=status))
