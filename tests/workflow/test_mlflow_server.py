"""Shared tracking-server mode: a pre-training and its linear probe logged to the lab's server
(harness.serve: PostgreSQL, basic auth, bound to a reachable address) by a local workflow, the
credentials in the environment only. Table 3 whole goes to it through Slurm (test_slurm.py)."""
import pytest
from conftest import check_logged_to_server

from harness.workflow.plan import Plan

pytestmark = pytest.mark.integration


def test_a_workflow_logs_to_the_lab_tracking_server(tmp_path, tracking_server, snakemake, monkeypatch):
    for key, value in tracking_server.credentials().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    plan = Plan("tiny", {}, {}, only=["table3"])
    probe = next(s for s, r in plan.runs.items() if r.stage == "linprobe" and r.cells[0].setting == "square M=2")
    out = snakemake(tmp_path, f"results/runs/{probe}/linprobe.json", "--config", "scale=tiny",
                    f"tracking_uri={tracking_server.url}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_logged_to_server(tmp_path, tracking_server, out, runs=2)  # the probe and the pre-training it reads
