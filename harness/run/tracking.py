"""MLflow: one run per stage, tagged with what links it to its table cells.

The store is a value every job is given: the `tracking_uri` of the workflow's config, else
`MLFLOW_TRACKING_URI`, else `results/mlflow.db` (sqlite). Artifacts have `mlflow-artifacts:`
locations, which an MLflow server resolves against its `--artifacts-destination`: with the
local store the jobs write them under `results/mlartifacts/`, so `mlflow ui
--backend-store-uri sqlite:///results/mlflow.db --artifacts-destination results/mlartifacts`
shows every run and its artifacts wherever `results/` is copied. A restarted stage (requeue,
crash) continues the MLflow run it started, whose id lives in its run folder; a run started over
with newer code (`--config rerun=stale`) has that id moved aside with its old results, so it
makes a new MLflow run, and the earlier one is tagged `superseded`.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from harness.core import metrics as names
from harness.core.errors import StageStopped
from harness.core.layout import Results, RunFolder

EXPERIMENT = "randsac-harness"
ARTIFACTS_SCHEME = "mlflow-artifacts:/"
T = TypeVar("T")


TRANSIENT = ("locked", "connection", "unique constraint failed")


def retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.5) -> T:
    """Retry a tracking call; sqlite answers 'database is locked' while another job writes, and
    two jobs logging the same new dataset at once race in MLflow's check-then-insert ('UNIQUE
    constraint failed'): asked again, the store finds the row the other job wrote."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException, sqlalchemy OperationalError, connection errors
            if i == attempts - 1 or not any(word in str(err).lower() for word in TRANSIENT):
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
        """Create the store and the experiment once; its id. The local store's experiment keeps
        its artifacts at a location relative to the artifacts folder, not an absolute path."""
        c = self.client()
        with self.creation_lock():
            exp = retry(lambda: c.get_experiment_by_name(EXPERIMENT))
            if exp is not None:
                return exp.experiment_id
            artifacts = ARTIFACTS_SCHEME + EXPERIMENT if self.local else None
            kind = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on its training runs
            return retry(lambda: c.create_experiment(EXPERIMENT, artifact_location=artifacts, tags=kind))

    def artifact_dir(self, artifact_uri: str) -> Path | None:
        """Where the local store keeps a run's artifacts (`artifact_uri` of the run), or None
        when a server keeps them."""
        if not self.local or not artifact_uri.startswith(ARTIFACTS_SCHEME):
            return None
        return self.results.mlartifacts / artifact_uri.removeprefix(ARTIFACTS_SCHEME).lstrip("/")


def tag_superseded(store: Store, run_id: str, why: str) -> None:
    """Tag an MLflow run `superseded` (`why`: when, and what code changed): its run folder was
    started over with newer code (`--config rerun=stale`), which makes a new MLflow run; this
    one stays, with its metrics and artifacts, and says it is no longer the run's result."""
    client = store.client()
    retry(lambda: client.set_tag(run_id, "superseded", why[:5000]))


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
    """Start or continue the MLflow run of one stage; log its metrics (under `<prefix>/`),
    its dataset and its artifacts."""

    def __init__(self, store: Store, run: RunFolder, tags: dict[str, str], params: dict[str, Any],
                 prefix: str | None = None):
        self.store, self.run = store, run
        self.tags, self.params, self.prefix = tags, params, prefix
        self.client = None
        self.run_id: str | None = None
        self.artifact_uri: str | None = None

    def __enter__(self) -> "StageTracker":
        self.client = self.store.client()
        id_file = self.run.mlflow_run_id
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
        else:
            exp = self.store.experiment_id()
            run = retry(lambda: self.client.create_run(exp, tags=self.tags, run_name=self.tags.get("mlflow.runName")))
            self.run_id = run.info.run_id
            params = [(k, str(v)[:6000]) for k, v in flatten(self.params).items()]
            from mlflow.entities import Param

            for i in range(0, len(params), 100):
                chunk = [Param(k, v) for k, v in params[i:i + 100]]
                retry(lambda: self.client.log_batch(self.run_id, params=chunk))
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id)
        self.artifact_uri = retry(lambda: self.client.get_run(self.run_id)).info.artifact_uri
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(names.key(self.prefix, k) if self.prefix else k, float(v), now, step) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_input(self, name: str, digest: str, source: str, profile: dict[str, Any], context: str = "train") -> None:
        """The dataset this stage read, as an MLflow input (the run page's Datasets)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(profile))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def log_artifact(self, path: Path) -> None:
        local = self.store.artifact_dir(self.artifact_uri)
        if local is None:
            retry(lambda: self.client.log_artifact(self.run_id, str(path)))
            return
        local.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, local / Path(path).name)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit, StageStopped)):
            status = "KILLED"  # preemption / requeue: the run continues on restart
        else:
            status = "FAILED" if exc_type is not None else "FINISHED"
        if status == "FINISHED":  # an earlier attempt's failure is history now, not the run's state
            failure = retry(lambda: self.client.get_run(self.run_id)).data.tags.get("failure")
            if failure is not None:
                retry(lambda: self.client.set_tag(self.run_id, "recovered", failure))
                retry(lambda: self.client.delete_tag(self.run_id, "failure"))
        retry(lambda: self.client.set_terminated(self.run_id, status=status))
