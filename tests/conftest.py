"""Shared fixtures: a results folder, a recording tracker, tiny configs, stage runs, Snakemake,
an MLflow server or UI."""
import os

# Two pytest workers, and the jobs they start, share the CPU: an OpenMP thread that spins
# 300,000 times at a barrier (GNU OpenMP's default) waits for a thread that is not scheduled.
# Set before torch loads the OpenMP runtime; the jobs inherit it. It changes when threads
# sleep, not what they compute (benchmarks/sharing.py, docs/findings.md).
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import re  # noqa: E402
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from harness.core.config import dotted_to_nested
from harness.core.layout import RunFolder
from harness.run.runner import stage_module
from harness.stages.checkpoint import Checkpoint
from harness.stages.context import StageContext
from harness.stages.distributed import SINGLE
from harness.plan.studies import expand, load_study
from harness.serve import write_private

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


class Recorder:
    """A tracker that keeps what a stage logs: [(step, metrics)], artifact paths, inputs."""

    def __init__(self):
        self.logged, self.artifacts, self.inputs = [], [], []

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def log_artifact(self, path):
        self.artifacts.append(Path(path))

    def log_input(self, **dataset):
        self.inputs.append(dataset)


class StopAfter(Checkpoint):
    """A checkpoint that stops its stage once epoch `epochs` is saved, as a kill right after would."""

    class Stop(Exception):
        pass

    def __init__(self, path, epochs: int):
        super().__init__(path)
        self.epochs = epochs

    def save(self, epoch, history, dist=SINGLE, **objects):
        super().save(epoch, history, dist, **objects)
        if epoch >= self.epochs:
            raise self.Stop(f"stopped after epoch {epoch}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Two worker processes (pyproject: -n 2 --dist loadgroup) share the machine, not the cluster
    or the session's runs: the tests that use the Slurm cluster run one after another on one
    worker (its node has this machine's CPUs, and the sdiag test counts every RPC of the user),
    and those reading the session's Table 3 on one worker (a session fixture is made once per
    worker). A group is the `@<group>` suffix of a test's id, which loadgroup schedules as one
    unit; it is set here because xdist 3.8's own `xdist_group` marker sets an attribute that
    pytest 9 no longer reads (`_nodeid`; pytest 9 keeps the id in `_id`)."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
        return
    from _pytest.nodes import coerce_node_id

    for item in items:
        group = ("slurm" if item.get_closest_marker("slurm") else
                 "table3" if "table3_tiny" in getattr(item, "fixturenames", ()) else None)
        if group:
            item._id = coerce_node_id(f"{item.nodeid}@{group}")


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """An empty results folder with its own sqlite MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def recorder():
    return Recorder


@pytest.fixture
def stop_after():
    return StopAfter


@pytest.fixture
def tiny_cfg():
    """The tiny config of one of Table 3's cells (M=2 by default), with dotted overrides."""
    def make(cell: int = 1, **dotted):
        return expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": 3, **dotted}))[cell].config
    return make


@pytest.fixture
def run_stage_here():
    """Run a stage in this process: (stage, cfg, folder, tracker, parent folder, checkpoint) -> metrics."""
    def run(stage, cfg, folder, tracker=None, parent=None, checkpoint=None):
        ctx = StageContext(cfg, RunFolder(Path(folder)), tracker or Recorder(),
                           RunFolder(Path(parent)) if parent else None, checkpoint=checkpoint)
        return stage_module(stage).run(ctx)
    return run


def run_snakemake(workdir: Path, *args: str, profile: str = "local", env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--profile", profile, "--directory", str(workdir), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)


def parse_job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table: rule -> number of jobs."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture
def snakemake():
    """Run Snakemake on a working directory from the repo root (its profiles and Snakefile)."""
    return run_snakemake


@pytest.fixture
def start_snakemake():
    """Start Snakemake in the background, in its own process group (to be stopped by a test)."""
    def start(workdir: Path, *args: str, profile: str = "local") -> subprocess.Popen:
        return subprocess.Popen([SNAKEMAKE, "--profile", profile, "--directory", str(workdir), *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return start


@pytest.fixture
def job_counts():
    return parse_job_counts


def slurm_cluster_problem() -> str | None:
    """Why no Slurm cluster can run the tests here, or None when one answers."""
    if shutil.which("sinfo") is None:
        return "Slurm's sinfo is not installed (bash cluster/install.sh)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not {"idle", "mixed", "allocated", "completing"} & set(out.stdout.split()):
        return f"no Slurm node answers ({(out.stderr or out.stdout).strip()}); start: bash cluster/start.sh"
    return None


# The system programs some tests read their output with, and the Debian packages that bring them
# (README: "What the tests need"): absent, such a test is skipped with its install line, except
# under CI (CI=true), whose .ci/run installs them.
READERS = {"pdflatex": "texlive-latex-base texlive-latex-recommended", "pdftoppm": "poppler-utils",
           "chromium": "chromium"}


def need_reader(program: str) -> None:
    if shutil.which(program) is not None:
        return
    line = f"{program} is not installed: apt-get install {READERS[program]}"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs it: {line}")
    pytest.skip(line)


@pytest.fixture
def reader():
    """need_reader: skip a test whose system reader is missing (fail under CI)."""
    return need_reader


@pytest.fixture(scope="session")
def slurm():
    """The project's single-node Slurm cluster (cluster/start.sh): skipped with the reason when
    none answers, a failure under CI (CI=true), which must start it."""
    problem = slurm_cluster_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI needs the Slurm cluster: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def table3_tiny(tmp_path_factory):
    """Table 3 at scale tiny through Snakemake, submitit's local executor and MLflow, run once
    for every test that reads it (they must not change it): (working directory, Snakemake's output)."""
    workdir = tmp_path_factory.mktemp("table3-tiny")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # tiny runs last seconds: sample every second
    out = run_snakemake(workdir, "table3", "--config", "scale=tiny", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen, why, timeout_s: float = 120) -> str:
    """`url` once an MLflow server there answers /health; fails with `why()` (its log) when the
    server process ends first or `timeout_s` passes."""
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return url
        except OSError:
            assert proc.poll() is None and time.time() < deadline, why()
            time.sleep(0.5)


@pytest.fixture
def start_mlflow():
    """Start `mlflow server` or `mlflow ui` (command) on 127.0.0.1 on a sqlite store and an
    artifacts folder, from the folder cwd: (command, db, artifacts, cwd) -> its URL once /health
    answers. Stopped when the test ends."""
    started = []

    def start(command: str, db: Path, artifacts: Path, cwd: Path) -> str:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), command, "--backend-store-uri",
                                 f"sqlite:///{db}", "--artifacts-destination", str(artifacts),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        return wait_for_health(f"http://127.0.0.1:{port}", proc, lambda: proc.stderr.read().decode()[-2000:])

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=60)


def postgres_problem() -> str | None:
    """Why no PostgreSQL can back the tracking-server tests here, or None: they use the database
    RANDSAC_TEST_DATABASE names (its role may create databases), whose password libpq reads
    from PGPASSFILE (cluster/postgres.sh makes both; .ci/run sets them)."""
    url = os.environ.get("RANDSAC_TEST_DATABASE")
    if not url:
        return ("no PostgreSQL for the tracking-server tests: bash cluster/postgres.sh /tmp/randsac-pg/pgpass, then "
                "export PGPASSFILE=/tmp/randsac-pg/pgpass RANDSAC_TEST_DATABASE=<the URL it prints>")
    from harness.serve import ServerError, database_answers

    try:
        database_answers(url, timeout_s=5)
    except ServerError as err:
        return str(err)
    return None


@pytest.fixture(scope="session")
def postgres() -> str:
    """The tests' PostgreSQL URL: skipped with the reason when none answers, a failure under CI."""
    problem = postgres_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI needs PostgreSQL: {problem}")
    if problem:
        pytest.skip(problem)
    return os.environ["RANDSAC_TEST_DATABASE"]


@pytest.fixture
def database(postgres):
    """A fresh PostgreSQL database for one test (its URL), dropped after it."""
    import uuid

    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield postgres.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reachable_address() -> str:
    """An address of this machine other than loopback (what compute nodes would reach), else 127.0.0.1."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in out if "." in a), "127.0.0.1")


class TrackingServer:
    """`python -m harness.serve` with basic auth, on PostgreSQL, bound to a reachable address."""

    def __init__(self, root: Path, database: str, host: str):
        self.root, self.database, self.host, self.port = root, database, host, free_port()
        self.user, self.password = "admin", "pw-" + os.urandom(12).hex()
        self.password_file = root / "admin-password"
        write_private(self.password_file, self.password)
        self.url, self.proc = f"http://{host}:{self.port}", None

    def start(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.serve", "--host", self.host, "--port", str(self.port), "--workers", "1",
             "--database", self.database, "--admin-password-file", str(self.password_file),
             "--artifacts", str(self.root / "artifacts"), "--state", str(self.root / "state")],
            cwd=self.root, stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "ab"),
            start_new_session=True)
        return wait_for_health(self.url, self.proc, lambda: (self.root / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=60)

    def credentials(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.user, "MLFLOW_TRACKING_PASSWORD": self.password}


@pytest.fixture
def tracking_server(tmp_path, database):
    """A started TrackingServer on a fresh database; stopped when the test ends."""
    root = tmp_path / "server"
    root.mkdir()
    server = TrackingServer(root, database, reachable_address())
    server.start()
    yield server
    server.stop()


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` (pickles, logs, configs, databases) whose bytes hold `secret`."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def rows_holding(database: str, secret: str) -> list[str]:
    """Every table of a PostgreSQL database with a row whose text holds `secret`."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database)
    found = []
    with engine.connect() as c:
        tables = c.execute(sqlalchemy.text("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'public'")).scalars().all()
        for table in tables:
            rows = c.execute(sqlalchemy.text(f'SELECT CAST(t AS text) FROM "{table}" t')).scalars().all()
            found += [table for row in rows if secret in row][:1]
    engine.dispose()
    assert tables, "no table: not the tracking server's database"
    return found


def check_logged_to_server(workdir: Path, server: TrackingServer, out: subprocess.CompletedProcess,
                           runs: int = 11) -> None:
    """Table 3 at tiny (or `runs` of its stage runs), logged to `server` by a workflow in
    `workdir` (Snakemake's `out`): every run there, artifacts proxied, system metrics sampled,
    and the password written nowhere."""
    import mlflow

    results = workdir / "results"
    assert not (results / "mlflow.db").exists()  # nothing went to the local sqlite store
    if runs == 11:
        assert "square M=2" in (results / "tables" / "table3.md").read_text()
    client = mlflow.MlflowClient(server.url)
    found = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(found) == runs and {r.info.status for r in found} == {"FINISHED"}
    pretrain = next(r for r in found if r.data.tags["stage"] == "pretrain")
    assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server keeps them, proxied
    assert "reconstruction.png" in {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert list((server.root / "artifacts").rglob("reconstruction.png"))
    assert any(k.startswith("system/") for k in pretrain.data.metrics)  # sampled beside the stage

    # the password reached the jobs through their environment and was written nowhere
    secret, run_id = server.password, pretrain.info.run_id
    assert files_holding(results, run_id) and "runs" in rows_holding(server.database, run_id)  # they do find
    assert files_holding(results, secret) == []  # job.json, config.yaml, submitit pickles and logs
    assert files_holding(workdir / ".snakemake", secret) == []
    assert rows_holding(server.database, secret) == []  # params, tags, the users' table (hashed)
    assert secret not in out.stdout + out.stderr
