"""The tracking store under a cluster's load: N stage runs logging at once, per store, in one run.

    python benchmarks/tracking_load.py [--n 16 64 200] [--stores sqlite server] [--seconds 30]
        [--sqlite-dir DIR]   # e.g. an NFS mount, for the sqlite store on a network file system

Each of N job-like processes does what a stage's tracking does, through the harness's own
delivery path (a spool in its run folder, carried by `harness.run.forwarder.Carrier`): it opens
a stage run (tags and 40 params), logs one epoch's metrics (4 values) every `--epoch-s` and a
system-metrics sample (8 values) every `--system-s` for `--seconds`, logs one artifact (a 200 KB
file) and ends the run. They all start at once (a workflow's first wave, the worst case).

Stores:
  - `sqlite`: the default, `results/mlflow.db` in a folder of this machine (or `--sqlite-dir`);
    every process writes the file itself.
  - `server`: `python -m harness.serve` (basic auth, 4 workers) on PostgreSQL (`server:0` with
    its password cache off: every request checks a PBKDF2 hash); needs the
    database of RANDSAC_TEST_DATABASE and its PGPASSFILE (cluster/postgres.sh).

Per store and N it prints: the wall time; the time to open the store (once per process, before
its first event); the latency of a delivery (one spool step: one store
call, or a few for the run's open and end), p50 and p99 over every call of every process; the
deliveries that failed (an exception: retried by the process, as the forwarder retries) and
the runs whose store holds fewer metric values than were logged (lost) or more (duplicated);
the CPU seconds, from the start of logging, of the store's own processes (the server and
PostgreSQL; sqlite has none: its writers pay) and of the N writers. No threshold is asserted.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCH_KEYS = ("pretrain/loss", "pretrain/lr", "pretrain/loss_floor", "pretrain/loss_ratio")
SYSTEM_KEYS = tuple(f"system/{k}" for k in ("cpu_utilization_percentage", "system_memory_usage_megabytes",
                                            "system_memory_usage_percentage", "disk_usage_percentage",
                                            "disk_usage_megabytes", "disk_available_megabytes",
                                            "network_receive_megabytes", "network_transmit_megabytes"))


def job(index: int, root: str, uri: str, seconds: float, epoch_s: float, system_s: float, out: str,
        start) -> None:
    """One stage run's tracking: its events appended to a spool and delivered at once, each
    delivery timed; a failed one is retried after a second, as the forwarder would."""
    from harness.core.layout import Results
    from harness.run.forwarder import Carrier
    from harness.run.spool import Spool
    from harness.run.tracking import Store

    results = Results(Path(root))
    run = results.run(f"load{index:04d}")
    run.path.mkdir(parents=True, exist_ok=True)
    spool = Spool(run, "pretrain")
    carrier = Carrier(spool, Store(uri, results))
    latencies, failures = [], 0

    def deliver() -> None:
        nonlocal failures
        while True:
            t = time.perf_counter()
            try:
                carrier.step()
                latencies.append(time.perf_counter() - t)
                return
            except Exception:  # noqa: BLE001 -- the store refused or timed out: counted, then again
                failures += 1
                carrier.client = None
                time.sleep(1.0)

    t = time.perf_counter()
    carrier.client = carrier.store.client()  # opened once per forwarder, before its stage's first event
    connect_s = time.perf_counter() - t
    start.wait(timeout=1800)  # every writer connected: they begin together
    cpu0 = sum(os.times()[:2])
    tags = {"stage": "pretrain", "signature": f"load{index:04d}", "mlflow.runName": f"load {index}",
            "table": "load", "cell": f"cell {index % 11}", "seed": "0", "scale": "paper", "load": "1"}
    params = {f"section{i // 10}.param{i}": str(i * 0.1) for i in range(40)}
    spool.append("open", tags=tags, params=params, parent=None, ts=int(time.time() * 1000), pid=os.getpid())
    deliver()
    began, epoch, sample, logged = time.time(), 0, 0, 0
    while time.time() - began < seconds:
        now = time.time() - began
        if now >= epoch * epoch_s:
            spool.append("metrics", step=epoch, ts=int(time.time() * 1000),
                         values={k: 1.0 / (epoch + 1) for k in EPOCH_KEYS})
            epoch, logged = epoch + 1, logged + len(EPOCH_KEYS)
            deliver()
        if now >= sample * system_s:
            spool.append("metrics", step=sample, ts=int(time.time() * 1000),
                         values={k: float(sample) for k in SYSTEM_KEYS})
            sample, logged = sample + 1, logged + len(SYSTEM_KEYS)
            deliver()
        time.sleep(0.05)
    artifact = run.path / "reconstruction.png"
    artifact.write_bytes(os.urandom(200_000))
    spool.append("artifact", path=str(artifact))
    deliver()
    spool.append("close", status="FINISHED", pid=os.getpid())
    deliver()
    Path(out).write_text(json.dumps({"run_id": carrier.run_id, "latencies": latencies, "failures": failures,
                                     "logged": logged, "cpu_s": sum(os.times()[:2]) - cpu0,
                                     "connect_s": connect_s}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def process_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes and their children, from /proc."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name", "username"]) if p.info["name"] in ("postgres", "postmaster")]


class LabServer:
    """harness.serve on a fresh PostgreSQL database, started for one measurement."""

    def __init__(self, base_url: str, workdir: Path, auth_cache_s: int):
        import sqlalchemy

        from harness.serve import write_private

        self.name = f"load_{os.getpid()}_{int(time.time())}"
        self.admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{self.name}"'))
        self.database = base_url.rsplit("/", 1)[0] + "/" + self.name
        self.password = "load-" + os.urandom(12).hex()
        pw = workdir / "admin"
        write_private(pw, self.password)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.serve", "--host", "127.0.0.1", "--port", str(self.port), "--database",
             self.database, "--admin-password-file", str(pw), "--artifacts", str(workdir / "artifacts"),
             "--state", str(workdir / "state"), "--auth-cache-s", str(auth_cache_s)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "server.log", "wb"), start_new_session=True)
        import urllib.request

        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((workdir / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        os.environ.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.password})

    def stop(self) -> None:
        import sqlalchemy

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        with self.admin.connect() as c:
            c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)


def measure(store: str, n: int, args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"load-{store}-{n}-", dir=args.sqlite_dir if store == "sqlite" else None))
    results = workdir / "results"
    results.mkdir()
    server = None
    if store == "sqlite":
        uri = f"sqlite:///{(results / 'mlflow.db').resolve()}"
        store_pids: list[int] = []
    else:
        server = LabServer(os.environ["RANDSAC_TEST_DATABASE"], workdir, int(store.partition(":")[2] or 60))
        uri = server.url
        store_pids = [server.proc.pid, *postgres_pids()]
    # the store and experiment made once before the jobs, as a workflow's start does; in a child
    # process, so that the writers forked from this one inherit no open connection
    subprocess.run([sys.executable, "-c", "import sys; from harness.core.layout import Results; "
                    "from pathlib import Path; from harness.run.tracking import Store; "
                    "Store(sys.argv[1], Results(Path(sys.argv[2]))).experiment_id()",
                    uri, str(results)], cwd=ROOT, check=True)
    ctx = mp.get_context("fork")  # the writers share the parent's imports: N processes fit in memory
    start = ctx.Barrier(n + 1)
    procs = [ctx.Process(target=job, args=(i, str(results), uri, args.seconds, args.epoch_s, args.system_s,
                                            str(workdir / f"job{i}.json"), start)) for i in range(n)]
    for p in procs:
        p.start()
    start.wait(timeout=1800)
    began, cpu_before = time.time(), process_cpu_s(store_pids)
    for p in procs:
        p.join()
    wall = time.time() - began
    store_cpu = process_cpu_s(store_pids) - cpu_before
    outs = [json.loads((workdir / f"job{i}.json").read_text()) for i in range(n) if (workdir / f"job{i}.json").exists()]

    import mlflow

    client = mlflow.MlflowClient(uri)
    lost = duplicated = 0
    for o in outs:
        run = client.get_run(o["run_id"])
        held = sum(len(client.get_metric_history(o["run_id"], k)) for k in (*EPOCH_KEYS, *SYSTEM_KEYS))
        lost += held < o["logged"] or run.info.status != "FINISHED"
        duplicated += held > o["logged"]
    latencies = [x for o in outs for x in o["latencies"]]
    row = {"store": store + (f" ({args.sqlite_dir})" if store == "sqlite" and args.sqlite_dir else ""), "n": n,
           "wall_s": round(wall, 1), "calls": len(latencies),
           "p50_ms": round(1000 * percentile(latencies, 0.5), 1), "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
           "connect_p50_s": round(percentile([o["connect_s"] for o in outs], 0.5), 2),
           "failed": sum(o["failures"] for o in outs), "jobs_missing": n - len(outs), "runs_lost": lost,
           "runs_duplicated": duplicated, "store_cpu_s": round(store_cpu, 1) if store_pids else None,
           "writers_cpu_s": round(sum(o["cpu_s"] for o in outs), 1)}
    if server is not None:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[16, 64, 200])
    ap.add_argument("--stores", nargs="+", default=["sqlite", "server"],
                    help="sqlite, server, or server:S (the server's --auth-cache-s S; default 60)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long each run logs")
    ap.add_argument("--epoch-s", type=float, default=3.0, help="seconds between a run's epochs")
    ap.add_argument("--system-s", type=float, default=5.0, help="seconds between system-metrics samples")
    ap.add_argument("--sqlite-dir", type=Path, default=None, help="where the sqlite store's results/ goes")
    args = ap.parse_args()
    from harness.run.forwarder import FAST_FAILURE

    for key, value in FAST_FAILURE.items():
        os.environ.setdefault(key, value)  # as the forwarder: a failure is the caller's to retry
    import mlflow  # noqa: F401 -- imported once, before the writers fork

    rows = []
    for store in args.stores:
        for n in args.n:
            rows.append(measure(store, n, args))
            print(json.dumps(rows[-1]), flush=True)
    import pandas as pd

    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
