"""The status command on a running table."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def status(workdir: Path, *config: str) -> str:
    out = subprocess.run([sys.executable, "-m", "harness.status", "table3", "--directory", str(workdir),
                          "--config", *config], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.integration
def test_status_of_a_running_table(tmp_path, start_snakemake, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ["scale=tiny", "pretrain={epochs: 6}", "data={train_subset: 1024}", "controls=false"]
    before = status(tmp_path, *config)
    assert before.count("not started") == 9 + 1  # every run, and the summary line
    proc = start_snakemake(tmp_path, "table3", "--config", *config)
    try:
        deadline = time.time() + 600
        while not list((tmp_path / "results" / "runs").glob("*/progress.json")):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.5)
        during = status(tmp_path, *config)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    running = [line for line in during.splitlines() if line.startswith("running")]
    assert len(running) == 1 and "local job" in running[0] and "/6," in running[0] and "ETA" in running[0]
    assert during.count("not started") == 8 + 1
    deadline = time.time() + 120  # the workflow was stopped: its job stops after its current step
    while "running" in (after := status(tmp_path, *config)).split("[harness]")[0]:
        assert time.time() < deadline, after
        time.sleep(1)
    assert "stopped" in after
    stopped = [p.parent for p in (tmp_path / "results" / "runs").glob("*/progress.json")]
    assert len(stopped) == 1 and (stopped[0] / "checkpoint.pt").exists()  # it kept its step
