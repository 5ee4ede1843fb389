"""Who may read and write what a run leaves: its folder readable by the user's group and
writable by the user alone, whatever the umask; the store a group logs into together (sqlite,
its artifacts) as writable as the user's umask says."""
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.files import run_folder_umask

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mask, others", [(0o002, True), (0o022, True), (0o077, False)])
def test_the_run_folder_umask(mask, others):
    files = 0o666 & ~run_folder_umask(mask)
    assert files & 0o022 == 0 and files & 0o640 == 0o640 and bool(files & 0o004) == others
    dirs = 0o777 & ~run_folder_umask(mask)
    assert dirs & 0o750 == 0o750 and dirs & 0o022 == 0


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
            if not p.is_symlink()}


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_a_launched_stage_keeps_its_run_folder_private_and_the_shared_store_follows_the_umask(tmp_path, monkeypatch,
                                                                                                mask):
    from harness.workflow import jobs
    from harness.workflow.plan import Plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RANDSAC_USER_UMASK", raising=False)
    plan = Plan("tiny", {"kind": "local", "cpus_per_task": 1}, {"pretrain": {"epochs": 1}}, only=["table3"])
    jobs.write_job_files(plan)
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain")
    run = tmp_path / plan.results.run(sig).path
    run.mkdir(parents=True)  # as Snakemake makes an output's folder, with the user's umask
    os.chmod(run, 0o777 & ~mask)
    cmd = [sys.executable, "-m", "harness.run.launch", *shlex.split(plan.launch_args(sig, "pretrain")),
           *shlex.split(jobs.job_args(plan, sig, "pretrain"))]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, umask=mask, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    folder = modes(run)
    assert {"pretrain.json", "checkpoint.pt", "config.yaml", "job.json", "tracking/pretrain.jsonl"} <= set(folder)
    assert any(p.startswith("submitit/") and p.endswith("_log.out") for p in folder)  # submitit's files too
    writable = {p: oct(m) for p, m in folder.items() if m & 0o022}
    unreadable = {p: oct(m) for p, m in folder.items() if m & 0o040 == 0}
    assert writable == {} and unreadable == {}  # the group reads, only the user writes
    db = tmp_path / "results" / "mlflow.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o666 & ~mask  # the shared store: the user's umask
    artifacts = tmp_path / "results" / "mlartifacts"
    shared = {p: m for p, m in modes(artifacts).items() if (artifacts / p).is_dir()}
    assert shared and all(m == 0o777 & ~mask for m in shared.values()), shared
