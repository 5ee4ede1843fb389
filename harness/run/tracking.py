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
import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from harness.core import metrics as names
from harness.core.errors import StageStopped
from harness.core.layout import Results, RunFolder
from harness.run.spool import Spool

EXPERIMENT = "randsac-harness"
ARTIFACTS_SCHEME = "mlflow-artifacts:/"
T = TypeVar("T")


# sqlite's races, retried in place; a store that does not answer is not retried here: the
# forwarder keeps the events and tries again (harness.run.forwarder)
TRANSIENT = ("locked", "unique constraint failed")


def retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.5) -> T:
    """Retry a tracking call; sqlite answers 'database is locked' while another job writes, and
    two jobs logging the same new dataset at once race in MLflow's check-then-insert ('UNIQUE
    constraint failed'): asked again, the store finds the row the other job wrote."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException, sqlalchemy OperationalError
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
        """A client of the store; creating a new sqlite store is serialized, and the file it
        makes follows the umask (SQLite makes it -rw-r--r-- whatever the umask: a group sharing
        results/ with umask 002 could not log to it)."""
        import mlflow

        with self.creation_lock():
            client = mlflow.MlflowClient(self.uri)
            db = self.results.mlflow_db
            if self.local and self.uri == f"sqlite:///{db.resolve()}" and db.exists():
                from harness.core.files import user_umask

                wanted = 0o666 & ~user_umask()  # a job's own umask keeps run folders private
                if db.stat().st_mode & 0o777 != wanted and db.stat().st_uid == os.getuid():
                    os.chmod(db, wanted)
            return client

    def experiment_id(self, client=None) -> str:
        """Create the store and the experiment once; its id (asked with `client`, or a new one).
        The local store's experiment keeps its artifacts at a location relative to the artifacts
        folder, not an absolute path."""
        c = client or self.client()
        with self.creation_lock():
            exp = retry(lambda: c.get_experiment_by_name(EXPERIMENT))
            if exp is not None:
                return exp.experiment_id
            artifacts = ARTIFACTS_SCHEME + EXPERIMENT if self.local else None
            kind = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on its training runs
            return retry(lambda: c.create_experiment(EXPERIMENT, artifact_location=artifacts, tags=kind))

    def unreachable(self, timeout_s: float = 5.0) -> str | None:
        """Why the store does not answer now, or None when it does: an MLflow server's /health
        within `timeout_s` (MLflow's own client would retry one call for minutes); a local
        store is always there."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout_s) as answer:
                return None if answer.status == 200 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:  # it answers, but not as a healthy server: the client will say more
            return None if err.code in (401, 403) else f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            return str(getattr(err, "reason", err))

    def has_password(self) -> bool:
        return urlsplit(self.uri).password is not None

    def refusal(self, err: Exception) -> str | None:
        """What an error of the store says about this user's credentials (an MLflow server with
        its basic-auth app: 401 for no or a wrong password, 403 for no permission), or None."""
        text, user = str(err), os.environ.get("MLFLOW_TRACKING_USERNAME")
        if re.search(r"\b401\b|UNAUTHENTICATED|not authenticated", text):
            return (f"tracking store {self.uri} refuses the password of user {user} (401): check "
                    f"MLFLOW_TRACKING_PASSWORD" if user else
                    f"tracking store {self.uri} asks for credentials (401): set MLFLOW_TRACKING_USERNAME and "
                    f"MLFLOW_TRACKING_PASSWORD where the workflow starts (jobs inherit them)")
        if re.search(r"\b403\b|PERMISSION_DENIED|[Pp]ermission denied", text):
            return (f"tracking store {self.uri}: user {user} may not write to experiment {EXPERIMENT} (403); its "
                    f"admin can grant EDIT on it")
        return None

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
    """The MLflow run of one stage, as the stage sees it: what it logs (metrics under
    `<prefix>/`, its dataset, artifacts, its end) goes into its spool (harness.run.spool) at
    once, and a forwarder process (harness.run.forwarder) carries it to the store. The stage
    never imports MLflow and never waits for the store; at its end it gives the forwarder time
    to deliver (`drain_s`, less when the store is known not to answer) and says what is left."""

    def __init__(self, store: Store, run: RunFolder, tags: dict[str, str], params: dict[str, Any],
                 prefix: str | None = None, parent: RunFolder | None = None, forwarder: "Forwarder | None" = None,
                 drain_s: float = 300.0):
        self.store, self.run = store, run
        self.tags, self.params, self.prefix, self.parent = tags, params, prefix, parent
        self.spool = Spool(run, prefix or "stage")
        self.forwarder, self.drain_s = forwarder, drain_s

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id once the forwarder has created it."""
        return self.run.mlflow_run_id.read_text().strip() if self.run.mlflow_run_id.exists() else None

    def __enter__(self) -> "StageTracker":
        if self.forwarder is None:
            self.forwarder = Forwarder.start(self.store, self.run, self.spool.stage)
        params = {k: str(v)[:6000] for k, v in flatten(self.params).items()}
        self.spool.append("open", tags=self.tags, params=params, parent=str(self.parent.path) if self.parent else None,
                          ts=now_ms(), pid=os.getpid())
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        values = {names.key(self.prefix, k) if self.prefix else k: float(v) for k, v in metrics.items()}
        self.spool.append("metrics", step=step, ts=now_ms(), values=values)

    def log_input(self, name: str, digest: str, source: str, profile: dict[str, Any], context: str = "train") -> None:
        """The dataset this stage read, as an MLflow input (the run page's Datasets)."""
        self.spool.append("input", name=name, digest=digest, source=source, profile=profile, context=context)

    def log_artifact(self, path: Path) -> None:
        self.spool.append("artifact", path=str(Path(path).resolve()))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit, StageStopped)):
            status = "KILLED"  # preemption / requeue: the run continues on restart
        else:
            status = "FAILED" if exc_type is not None else "FINISHED"
        self.spool.append("close", status=status, pid=os.getpid())  # the forwarder of this process ends with it
        self.forwarder.finish(self.drain_s)


def now_ms() -> int:
    return int(time.time() * 1000)


class Forwarder:
    """The process that carries a stage's spool to the store (harness.run.forwarder)."""

    def __init__(self, proc: subprocess.Popen, spool: Spool):
        self.proc, self.spool = proc, spool

    @classmethod
    def start(cls, store: Store, run: RunFolder, stage: str) -> "Forwarder":
        """Start it now (a job starts it before its own imports: both start up side by side)."""
        from harness.core.fingerprint import package_root
        from harness.run.warm import warm_command

        env = dict(os.environ)  # the same harness as this process: a job's snapshot
        env["PYTHONPATH"] = os.pathsep.join([str(package_root().parent), *filter(None, [env.get("PYTHONPATH")])])
        # forked from the job's warm server when the job was (harness.run.warm)
        cmd = warm_command("harness.run.forwarder", "--run", str(run.path), "--stage", stage, "--uri", store.uri,
                           "--results", str(store.results.root), "--parent-pid", str(os.getpid()))
        run.tracking.mkdir(parents=True, exist_ok=True)
        return cls(subprocess.Popen(cmd, env=env), Spool(run, stage))

    def store_down(self) -> bool:
        try:
            return json.loads(self.spool.state_file.read_text()).get("down_since") is not None
        except (FileNotFoundError, ValueError):
            return False

    def finish(self, drain_s: float) -> None:
        """Wait for it to deliver the run's end (a few seconds when the store does not answer),
        then stop it; say how much waits in the spool if it could not deliver it all."""
        deadline = time.time() + drain_s
        while self.proc.poll() is None and time.time() < deadline:
            if self.store_down():
                deadline = min(deadline, time.time() + DOWN_GRACE_S)
            time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        waiting = self.spool.waiting()
        if waiting:
            print(f"[harness] tracking: {waiting} events of this stage wait in {self.spool.events}; the next workflow "
                  f"or `python -m harness.status --replay` delivers them", flush=True)


DOWN_GRACE_S = 5.0  # how long a stage's end waits for a store that is known not to answer
