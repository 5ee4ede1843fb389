"""Training never dies of tracking: a real `mlflow server` stopped in the middle of a stage and
started again, and one that is down for the whole stage and replayed afterwards; each on sqlite
and on the lab's server (PostgreSQL behind basic auth)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from conftest import TrackingServer, free_port, reachable_address, wait_for_health

from harness.core.layout import Results
from harness.run.spool import Spool

pytestmark = pytest.mark.integration

EPOCHS = 8

STAGE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness.core.config import dotted_to_nested
    from harness.core.layout import Results
    from harness.plan.studies import expand, load_study
    from harness.run.runner import run_stage
    from harness.run.tracking import Store
    from harness.science import methods
    results, uri, epochs = Results(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    cfg = expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": epochs}))[1].config
    sig = methods.signature(cfg, "pretrain")
    run_stage("pretrain", cfg, results.run(sig), store=Store(uri, results), tags={"mlflow.runName": "outage"})
    print("SIGNATURE", sig, flush=True)
""")


class Server:
    """`mlflow server` on one port, stopped and started again on the same store."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                                      f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
                                      str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", "1"], cwd=self.root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_health(self.url, self.proc, lambda: "mlflow server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers, as a crash would
        self.proc.wait(timeout=60)


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path, monkeypatch):
    """Not started: the project's two server stores, a plain `mlflow server` on sqlite and
    `harness.serve` (PostgreSQL, basic auth, bound to a reachable address) with the
    credentials in the environment, as the jobs get them."""
    (tmp_path / "server").mkdir()
    if request.param == "sqlite":
        s = Server(tmp_path / "server")
    else:
        s = TrackingServer(tmp_path / "server", request.getfixturevalue("database"), reachable_address())
        for key, value in s.credentials().items():
            monkeypatch.setenv(key, value)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.stop()


def start_stage(results: Path, uri: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STAGE, str(results), uri, str(EPOCHS)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def epoch_reached(results: Path) -> int:
    for progress in results.glob("runs/*/progress.json"):
        try:
            return int(json.loads(progress.read_text())["epoch"])
        except (ValueError, KeyError):
            return 0
    return 0


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out, out.split("SIGNATURE ")[-1].strip()


def history(uri: str, run_id: str) -> list[int]:
    client = mlflow.MlflowClient(uri)
    return sorted(m.step for m in client.get_metric_history(run_id, "pretrain/loss"))


def test_a_store_that_stops_mid_stage_and_comes_back_gets_every_epoch_once(tmp_path, server):
    server.start()
    cut = tmp_path / "cut"
    stage = start_stage(cut, server.url)
    while epoch_reached(cut) < 2:
        assert stage.poll() is None, stage.stdout.read()[-3000:]
        time.sleep(0.05)
    server.stop()
    while epoch_reached(cut) < 4:  # it trains on, spooling
        assert stage.poll() is None, stage.stdout.read()[-3000:]
        time.sleep(0.05)
    os.kill(stage.pid, signal.SIGSTOP)  # held while the server starts again, so that it comes back mid-stage
    server.start()
    os.kill(stage.pid, signal.SIGCONT)
    out, sig = finish(stage)
    assert "does not answer" in out and "answers again" in out, out[-3000:]
    run = Results(cut).run(sig)
    assert Spool(run, "pretrain").waiting() == 0
    run_id = run.mlflow_run_id.read_text().strip()
    assert history(server.url, run_id) == list(range(EPOCHS))  # every epoch, once
    mlrun = mlflow.MlflowClient(server.url).get_run(run_id)
    assert mlrun.info.status == "FINISHED" and "pretrain/final_loss" in mlrun.data.metrics

    whole = tmp_path / "whole"  # the same stage with the store up all along: the same result
    _, sig2 = finish(start_stage(whole, server.url))
    assert sig2 == sig
    ours = json.loads(run.result("pretrain").read_text())["metrics"]
    assert ours == json.loads(Results(whole).run(sig).result("pretrain").read_text())["metrics"]


def test_a_store_down_for_the_whole_stage_is_replayed_once_it_answers(tmp_path, server):
    from harness.run.forwarder import replay
    from harness.run.tracking import Store

    results = tmp_path / "results"
    started = time.time()
    out, sig = finish(start_stage(results, server.url))  # nothing listens on its port yet
    assert time.time() - started < 300  # the end waits a few seconds for the store, not minutes
    run = Results(results).run(sig)
    assert run.result("pretrain").exists() and not run.mlflow_run_id.exists()
    waiting = Spool(run, "pretrain").waiting()
    assert waiting > EPOCHS and f"{waiting} events of this stage wait in" in out, out[-3000:]

    server.start()
    store = Store(server.url, Results(results))
    assert replay(Results(results), store) == (1, 0)
    assert replay(Results(results), store) == (0, 0)  # nothing left: a second replay sends nothing
    run_id = run.mlflow_run_id.read_text().strip()
    assert history(server.url, run_id) == list(range(EPOCHS))
    Spool(run, "pretrain").mark_sent(0)  # as if a replay died before it counted what it sent
    assert replay(Results(results), store) == (1, 0)
    assert history(server.url, run_id) == list(range(EPOCHS))  # delivered again, held once
    assert mlflow.MlflowClient(server.url).get_run(run_id).info.status == "FINISHED"
