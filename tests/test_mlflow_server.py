"""Shared tracking-server mode: a real `mlflow server` on 127.0.0.1, a tiny table logged to it."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                             "--artifacts-destination", str(store / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=store)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_tiny_table_against_a_tracking_server(tmp_path, mlflow_server, snakemake):
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={mlflow_server}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (tmp_path / "results" / "mlflow.db").exists()  # nothing went to the local sqlite store
    assert "square M=2" in (tmp_path / "results" / "tables" / "table3.md").read_text()
    client = mlflow.MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}
    pretrain = next(r for r in runs if r.data.tags["stage"] == "pretrain")
    assert "reconstruction.png" in {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server keeps them, proxied
