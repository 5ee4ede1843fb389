"""MLflow under load and under failure: concurrent writers, sqlite races (a NaN loss through
Snakemake: workflow/test_snakemake.py)."""
import os
import subprocess
import sys
import textwrap

import mlflow
import pytest

from harness.core.layout import Results
from harness.run.tracking import EXPERIMENT, Store


@pytest.mark.integration  # eight stage processes at once
def test_eight_concurrent_stages_lose_nothing(results_dir):
    """8 processes each log a whole stage (params, 40 epochs of metrics) to one sqlite store."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from harness.core.layout import Results
        from harness.run.tracking import StageTracker, Store
        i = int(sys.argv[1])
        results = Results(Path({str(results_dir)!r}))
        run = results.run(f"run{{i}}")
        run.path.mkdir(parents=True)
        params = {{"model": {{"depth": i, "embed_dim": 32}}, "seed": i}}
        with StageTracker(Store.of(results), run, {{"signature": f"sig{{i}}", "stage": "pretrain"}}, params,
                          prefix="pretrain") as t:
            for epoch in range(40):
                t.log({{"loss": 1.0 / (epoch + 1) + i, "lr": 0.1}}, step=epoch)
            t.log({{"final_loss": float(i)}}, step=0)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    assert not any("database is locked" in e for e in errors)
    client = mlflow.MlflowClient(Store.of(Results(results_dir)).uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        i = int(r.data.tags["signature"][3:])
        history = client.get_metric_history(r.info.run_id, "pretrain/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(40))
        assert r.data.params["model.depth"] == str(i) and r.data.metrics["pretrain/final_loss"] == i


def test_retry_rides_out_sqlite_races_and_nothing_else(monkeypatch):
    """'database is locked' and two jobs inserting the same new dataset at once are retried; any
    other error is raised at once."""
    from harness.run import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    for transient in ("(sqlite3.OperationalError) database is locked",
                      "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name"):
        calls = []

        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError(transient)
            return "logged"
        assert tracking.retry(flaky) == "logged" and len(calls) == 3
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("no such table: runs")
    with pytest.raises(RuntimeError, match="no such table"):
        tracking.retry(broken)
    assert len(calls) == 1


def test_a_run_finished_after_a_failure_says_it_recovered(results_dir):
    """`scancel`, then asking again: the MLflow run ends FINISHED without a `failure` tag (a filter
    on tags.failure finds only runs that are failed now); `recovered` keeps what happened."""
    from harness.run.launch import mark_failed
    from harness.run.tracking import StageTracker

    results = Results(results_dir)
    run = results.run("abc123")
    run.path.mkdir(parents=True)
    store = Store.of(results)
    with pytest.raises(KeyboardInterrupt):
        with StageTracker(store, run, {"signature": "abc123", "stage": "pretrain"}, {}, prefix="pretrain"):
            raise KeyboardInterrupt  # the job stopped
    mark_failed(store.uri, results, run, "Slurm job 12 CANCELLED by 0", killed=True)
    run_id = run.mlflow_run_id.read_text().strip()
    assert store.client().get_run(run_id).data.tags["failure"] == "Slurm job 12 CANCELLED by 0"
    with StageTracker(store, run, {"signature": "abc123", "stage": "pretrain"}, {}, prefix="pretrain"):
        pass  # asked again: it finishes
    finished = store.client().get_run(run_id)
    assert finished.info.status == "FINISHED" and "failure" not in finished.data.tags
    assert finished.data.tags["recovered"] == "Slurm job 12 CANCELLED by 0"


def test_the_sqlite_store_follows_the_umask(tmp_path):
    """With umask 002 (a group sharing results/), the store is group-writable; SQLite alone makes
    it -rw-r--r--."""
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from harness.core.layout import Results
        from harness.run.tracking import Store
        os.umask(0o002)
        Store.of(Results(Path({str(tmp_path)!r}))).experiment_id()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RANDSAC_USER_UMASK"}  # no workflow's umask to follow
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, env=env)
    assert (tmp_path / "mlflow.db").stat().st_mode & 0o777 == 0o664


def test_a_requeued_stage_forwards_both_attempts_and_ends_finished(tmp_path):
    """A preempted attempt's end (KILLED) may still wait in the spool when the requeued attempt
    starts: the new forwarder delivers it, goes on, and ends only with its own stage's end."""
    from harness.run.forwarder import Carrier
    from harness.run.spool import Spool

    results = Results(tmp_path)
    run = results.run("sig")
    spool, store = Spool(run, "pretrain"), Store.of(results)
    spool.append("open", tags={"signature": "sig"}, params={"a": "1"}, parent=None, ts=1, pid=100)
    spool.append("metrics", step=0, ts=2, values={"pretrain/loss": 1.0})
    spool.append("close", status="KILLED", pid=100)
    carrier = Carrier(spool, store, stage_pid=200)
    assert carrier.step() is False  # the earlier attempt's end is not this forwarder's
    spool.append("open", tags={"signature": "sig"}, params={"a": "1"}, parent=None, ts=3, pid=200)
    spool.append("metrics", step=1, ts=4, values={"pretrain/loss": 0.5})
    spool.append("close", status="FINISHED", pid=200)
    assert carrier.step() is True and spool.waiting() == 0
    client = store.client()
    run_id = run.mlflow_run_id.read_text().strip()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "pretrain/loss")] == [0, 1]
