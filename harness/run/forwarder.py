"""The forwarder: a process beside a stage that carries its tracking spool (harness.run.spool) to
the MLflow store, so that the stage never imports MLflow, never waits for the store, and never
dies of it.

    python -m harness.run.forwarder --run results/runs/<sig> --stage pretrain --uri <store> --results results

The stage's job starts it before its own imports (the two start up side by side). It opens the
store, then delivers the spool's events as they come: the MLflow run (created, or continued on
a resume), its params and tags, every metric with its step and time, the dataset, artifacts,
and the run's end; and MLflow's system metrics while the run trains. When the store does not
answer, it says so in one line, keeps the events where they are and tries again (1 s, doubling,
at most 30 s, and again whenever the stage logs: at its next epoch, at its end); when the
store answers again, it delivers them and says so. It ends once the
run's end is delivered, or, when its stage has gone (a killed job), after one last try; what is
left is replayed later (`replay`: the next workflow, or `python -m harness.status --replay`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from harness.core import processes
from harness.core.files import shared_files, write_text_atomic
from harness.core.layout import Results, RunFolder
from harness.run.spool import Spool, spools
from harness.run.tracking import Store, retry

POLL_S = 1.0
MAX_BACKOFF_S = 30.0
# a store that does not answer fails fast: the forwarder's own loop is the retry (MLflow's HTTP
# client would otherwise retry one call for minutes)
FAST_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class Carrier:
    """Delivers one spool's events to one store, in order, counting each batch once it is held."""

    def __init__(self, spool: Spool, store: Store, system_metrics: bool = False, stage_pid: int | None = None):
        self.spool, self.store, self.stage_pid = spool, store, stage_pid
        self.client = None
        self.run_id = spool.run.mlflow_run_id.read_text().strip() if spool.run.mlflow_run_id.exists() else None
        self.system_metrics, self.monitor = system_metrics, None

    def step(self) -> bool:
        """Deliver every complete event not yet delivered; True once the end of the stage process
        `stage_pid` is (the spool may begin with what an earlier attempt left, its end included)."""
        if self.client is None:
            self.client = self.store.client()
        done = self.spool.sent()
        events = self.spool.read(done)
        closed = False
        while events:
            batch = [events[0]]
            if batch[0]["kind"] == "metrics":  # consecutive metrics: one call, up to 1000 values
                while len(batch) < len(events) and events[len(batch)]["kind"] == "metrics" and \
                        sum(len(e["values"]) for e in batch) < 1000:
                    batch.append(events[len(batch)])
                self.metrics(batch)
            else:
                closed = self.apply(batch[0]) or closed
            done += len(batch)
            self.spool.mark_sent(done)
            events = events[len(batch):]
        return closed

    def apply(self, event: dict[str, Any]) -> bool:
        kind, client = event["kind"], self.client
        if kind == "open":
            self.open(event)
        elif kind == "input":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            dataset = Dataset(name=event["name"], digest=event["digest"], source_type="local",
                              source=json.dumps({"uri": event["source"]}), profile=json.dumps(event["profile"]))
            inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", event["context"])])]
            retry(lambda: client.log_inputs(self.run_id, datasets=inputs))
        elif kind == "artifact":
            self.artifact(Path(event["path"]))
        elif kind == "close":
            self.close(event["status"])
            return event.get("pid") == self.stage_pid
        return False

    def open(self, event: dict[str, Any]) -> None:
        """The stage started: create its MLflow run, or continue it (a resumed or restarted stage)."""
        client = self.client
        if self.run_id is not None:
            retry(lambda: client.update_run(self.run_id, status="RUNNING"))
        else:
            tags = dict(event["tags"])
            parent = RunFolder(Path(event["parent"])) if event.get("parent") else None
            if parent is not None and parent.mlflow_run_id.exists():  # nested under the pre-training run it reads
                tags["mlflow.parentRunId"] = parent.mlflow_run_id.read_text().strip()
            experiment = self.store.experiment_id(client)  # the store and the experiment, made once
            run = retry(lambda: client.create_run(experiment, tags=tags, run_name=tags.get("mlflow.runName"),
                                                  start_time=event.get("ts")))
            self.run_id = run.info.run_id
            write_text_atomic(self.spool.run.mlflow_run_id, self.run_id)
            from mlflow.entities import Param

            params = list(event["params"].items())
            for i in range(0, len(params), 100):
                chunk = [Param(k, v) for k, v in params[i:i + 100]]
                retry(lambda: client.log_batch(self.run_id, params=chunk))
        self.start_monitor()

    def metrics(self, events: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        batch = [Metric(k, float(v) if v is not None else math.nan, e["ts"], e["step"])
                 for e in events for k, v in e["values"].items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def artifact(self, path: Path) -> None:
        if not path.exists():  # gone since (a run started over): nothing to carry
            print(f"[harness] tracking: artifact {path} no longer exists; not logged", flush=True)
            return
        uri = retry(lambda: self.client.get_run(self.run_id)).info.artifact_uri
        local = self.store.artifact_dir(uri)
        if local is None:
            retry(lambda: self.client.log_artifact(self.run_id, str(path)))
            return
        with shared_files():  # results/mlartifacts/ is the group's, as results/mlflow.db
            local.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, local / path.name)

    def close(self, status: str) -> None:
        self.stop_monitor()
        client = self.client
        if status == "FINISHED":  # an earlier attempt's failure is history now, not the run's state
            failure = retry(lambda: client.get_run(self.run_id)).data.tags.get("failure")
            if failure is not None:
                retry(lambda: client.set_tag(self.run_id, "recovered", failure))
                retry(lambda: client.delete_tag(self.run_id, "failure"))
        retry(lambda: client.set_terminated(self.run_id, status=status))

    def start_monitor(self) -> None:
        """MLflow's system metrics (CPU, memory, disk, network; GPU where nvidia-ml-py sees one),
        sampled every 10 s or every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds, on this
        machine (the stage's), while the stage trains."""
        if not self.system_metrics or self.monitor is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        interval_s = float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", 10))
        self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, resume_logging=True,
                                            tracking_uri=self.store.uri)
        self.monitor.start()

    def stop_monitor(self) -> None:
        """The samples taken since the last logged step are logged too: MLflow's monitor drops
        them, so a stage shorter than one interval (a probe on cached features) would log none."""
        if self.monitor is None:
            return
        monitor, self.monitor = self.monitor, None
        monitor.finish()
        last = monitor.aggregate_metrics()
        if last:
            monitor.publish_metrics(last)
            monitor.mlflow_logger.flush()


class StageProcess:
    """The stage's process, alive or gone: this process's parent, or, for a forwarder forked
    from a warm server (harness.run.warm), the process of that pid and start time, not a zombie."""

    def __init__(self, pid: int):
        self.pid, self.parent = pid, os.getppid() == pid
        self.started = None if self.parent else processes.stat(pid)

    def alive(self) -> bool:
        if self.parent:
            return os.getppid() == self.pid
        now = processes.stat(self.pid)  # (state, start time): the same process, and not a zombie
        return now is not None and self.started is not None and now[1] == self.started[1] and now[0] != "Z"


def forward(spool: Spool, store: Store, parent_pid: int) -> int:
    """Carry `spool` to `store` until the run's end is delivered or the stage's process is gone."""
    carrier = Carrier(spool, store, system_metrics=True, stage_pid=parent_pid)
    stage = StageProcess(parent_pid)
    backoff, down_since = 1.0, None
    while True:
        stage_alive = stage.alive()
        try:
            closed = carrier.step()
        except Exception as err:  # noqa: BLE001 -- any failure of the store: the events wait
            carrier.client = None  # open the store anew next time
            if down_since is None:
                down_since = time.time()
                write_text_atomic(spool.state_file, json.dumps({"down_since": down_since}))
                print(f"[harness] tracking store {store.uri} does not answer ({str(err).splitlines()[0][:200]}): "
                      f"the stage trains on; what it logs waits in {spool.events} and is delivered when the store "
                      f"answers", flush=True)
            if not stage_alive:
                return 1
            wait_for_news(spool, backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_S)
            continue
        if down_since is not None:
            print(f"[harness] tracking store answers again after {time.time() - down_since:.0f} s: "
                  f"the spooled events are delivered", flush=True)
            down_since, backoff = None, 1.0
            write_text_atomic(spool.state_file, json.dumps({"down_since": None}))
        if closed or not stage_alive:
            return 0
        time.sleep(POLL_S)


def wait_for_news(spool: Spool, seconds: float) -> None:
    """Sleep up to `seconds`, less when the stage logs something (an epoch ends, the stage ends):
    a store that is back is then found at the next epoch, not at the end of a long backoff."""
    def size() -> int:
        try:
            return spool.events.stat().st_size
        except FileNotFoundError:
            return 0

    start, deadline = size(), time.time() + seconds
    while time.time() < deadline and size() == start:
        time.sleep(0.2)


def replay(results: Results, store: Store) -> tuple[int, int]:
    """Deliver every spool of `results` that is behind and that no forwarder carries now:
    (spools delivered, spools still behind because the store did not answer)."""
    delivered = behind = 0
    for spool in spools(results.root / "runs"):
        if not spool.waiting():
            continue
        with spool.lock(wait=False) as held:
            if not held:  # a live forwarder carries it
                continue
            try:
                Carrier(spool, store).step()
                delivered += 1
            except Exception:  # noqa: BLE001 -- the store does not answer: it stays spooled
                behind += 1
    return delivered, behind


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--stage", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--parent-pid", required=True, type=int, help="the stage's process: gone, the forwarder ends")
    args = ap.parse_args(argv)
    for key, value in FAST_FAILURE.items():
        os.environ.setdefault(key, value)
    # Slurm signals every process of a preempted or requeued job step: the forwarder goes on
    # delivering while its stage checkpoints, and ends with its stage
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    spool = Spool(RunFolder(args.run), args.stage)
    with spool.lock() as _:
        return forward(spool, Store(args.uri, Results(args.results)), args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
