"""A job runs the code it was submitted with: the launcher started from a copy of the package,
the copy's loss edited while the job waits in the queue, between a stop and the request that
resumes it, or between a preemption and the requeue. The copy stands in for a user's working
tree (the tests never edit this repository's harness)."""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness
from harness.core.layout import Results, RunFolder
from harness.run.snapshot import code_hash, package_files
from harness.run.tracking import Store

pytestmark = pytest.mark.integration

SQUARED, ABSOLUTE = "(pred - target).pow(2)", "(pred - target).abs()"  # RandSAC's loss, and an edit of it


def copy_package(tmp_path: Path) -> Path:
    """This repository's package copied to tmp_path/src/harness; returns tmp_path/src."""
    src = tmp_path / "src"
    shutil.copytree(Path(harness.__file__).parent, src / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def edit_loss(src: Path) -> None:
    """The squared error of the pixel loss made an absolute one, in the copy."""
    hits = [p for p in (src / "harness").rglob("*.py") if SQUARED in p.read_text()]
    assert len(hits) == 1, hits
    hits[0].write_text(hits[0].read_text().replace(SQUARED, ABSOLUTE))


def launcher(workdir: Path, src: Path, monkeypatch, executor: dict, overrides: dict):
    """The launch command Snakemake would run for Table 3's M=2 pre-training, started with the
    copy first on the import path: (command, environment, run folder, config)."""
    from harness.workflow import jobs
    from harness.workflow.plan import Plan

    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = Plan("tiny", executor, overrides, only=["table3"])
    jobs.write_job_files(plan)  # what the Snakefile's onstart does
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain" and r.cells[0].setting == "square M=2")
    cmd = [sys.executable, "-m", "harness.run.launch", *shlex.split(plan.launch_args(sig, "pretrain")),
           *shlex.split(jobs.job_args(plan, sig, "pretrain"))]
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return cmd, env, RunFolder(workdir / plan.results.run(sig).path), plan.runs[sig].config


def result(run) -> dict:
    return json.loads(run.result("pretrain").read_text())["metrics"]


def snapshot_tag(run) -> str:
    store = Store.of(Results(run.path.parent.parent))
    return store.client().get_run(run.mlflow_run_id.read_text().strip()).data.tags["code_snapshot"]


def wait_for(path: Path, proc: subprocess.Popen, what: str, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the launcher ended (rc {proc.returncode}) before {what}:\n" + proc.communicate()[0][-3000:])
        time.sleep(0.3)


def test_a_stopped_run_asked_again_resumes_with_the_code_that_wrote_its_checkpoint(
        tmp_path, monkeypatch, run_stage_here, recorder):
    """Local executor: a run stopped mid-way (Ctrl-C), the loss edited, the run asked again: it
    resumes with its snapshot and ends with the numbers of the old code, uninterrupted. With
    its snapshot deleted it is refused in one line, and nothing is submitted."""
    src = copy_package(tmp_path)
    old = code_hash(package_files(src / "harness"))
    cmd, env, run, cfg = launcher(tmp_path / "work", src, monkeypatch, {"kind": "local", "cpus_per_task": 2},
                                  {"pretrain": {"epochs": 4}, "data": {"train_subset": 1024}})
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path / "work", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for(run.progress, proc, "an epoch was done")
    proc.send_signal(2)  # Ctrl-C: the job checkpoints its step and stops
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and run.checkpoint.exists() and not run.result("pretrain").exists(), out[-3000:]
    assert f"[harness] code: snapshot {old} ({run.path.parent.parent / 'code' / old / 'harness'})" in out
    edit_loss(src)
    new = code_hash(package_files(src / "harness"))

    snap = run.path.parent.parent / "code" / old
    snap.rename(snap.with_name("away"))  # the snapshot is gone
    attempts = len(list(run.submitit.iterdir()))
    refused = subprocess.run(cmd, env=env, cwd=tmp_path / "work", capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert "\n" not in line and f"its checkpoint was written by code snapshot {old}, which is gone" in line
    assert f"today's code (snapshot {new}), delete (or move aside) {run.checkpoint.resolve()}" in line
    assert len(list(run.submitit.iterdir())) == attempts  # nothing submitted

    snap.with_name("away").rename(snap)
    again = subprocess.run(cmd, env=env, cwd=tmp_path / "work", capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resumes with the code its checkpoint was written by (snapshot {old}; today's is {new}" in again.stdout
    assert f"[harness] code: snapshot {old}" in again.stdout and "resuming at epoch" in again.stdout
    assert snapshot_tag(run) == old and json.loads(run.code.read_text())["snapshot"] == old
    assert not (run.path.parent.parent / "code" / new).exists()  # today's code never ran
    assert result(run) == run_stage_here("pretrain", cfg, tmp_path / "straight", recorder())  # the old code's, exactly


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm")
def test_a_job_queued_before_an_edit_runs_the_code_it_was_submitted_with(tmp_path, monkeypatch, run_stage_here,
                                                                         recorder):
    """A Slurm job held in the queue; the loss edited; the job released: its result is the old
    code's, bit for bit, and not the edited code's (a job submitted after the edit)."""
    src = copy_package(tmp_path)
    old = code_hash(package_files(src / "harness"))
    overrides = {"pretrain": {"epochs": 2}, "data": {"train_subset": 512}}
    cmd, env, run, cfg = launcher(tmp_path / "work", src, monkeypatch,
                                  {"kind": "slurm", "partition": "cpu", "cpus_per_task": 2, "mem_gb": 2,
                                   "timeout_min": 20, "additional": {"hold": True}}, overrides)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path / "work", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for(run.job, proc, "it submitted its job")
    job_id = str(json.loads(run.job.read_text())["job_id"])
    try:
        squeue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True)
        assert squeue.stdout.strip() == "PENDING|JobHeldUser"
        edit_loss(src)  # while it waits
    finally:
        subprocess.run(["scontrol", "release", job_id], check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert f"[harness] code: snapshot {old}" in out and snapshot_tag(run) == old

    straight = run_stage_here("pretrain", cfg, tmp_path / "straight", recorder())  # the old code, here
    assert result(run) == straight
    later, env_later, run_later, _ = launcher(tmp_path / "later", src, monkeypatch,
                                              {"kind": "local", "cpus_per_task": 2}, overrides)
    after = subprocess.run(later, env=env_later, cwd=tmp_path / "later", capture_output=True, text=True, timeout=600)
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-3000:]
    assert snapshot_tag(run_later) == code_hash(package_files(src / "harness")) != old
    assert result(run_later)["loss"] != straight["loss"]  # the edit reached the job submitted after it


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm")
def test_a_requeued_job_resumes_with_its_snapshot(tmp_path, monkeypatch, run_stage_here, recorder):
    """The loss edited while the job trains, then `scontrol requeue`: the requeued job (same
    sbatch script) imports its snapshot again and ends with the old code's numbers."""
    src = copy_package(tmp_path)
    old = code_hash(package_files(src / "harness"))
    cmd, env, run, cfg = launcher(tmp_path / "work", src, monkeypatch,
                                  {"kind": "slurm", "partition": "cpu", "cpus_per_task": 2, "mem_gb": 2,
                                   "timeout_min": 20}, {"pretrain": {"epochs": 6}, "data": {"train_subset": 1024}})
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path / "work", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for(run.progress, proc, "an epoch was done")
    edit_loss(src)
    job_id = str(json.loads(run.job.read_text())["job_id"])
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-3000:]
    assert "resuming at epoch" in out and out.count(f"[harness] code: snapshot {old}") == 2, out[-3000:]
    assert snapshot_tag(run) == old
    assert result(run) == run_stage_here("pretrain", cfg, tmp_path / "straight", recorder())


def test_every_run_of_a_workflow_names_the_snapshot_it_ran(table3_tiny):
    """Table 3 through Snakemake: each of its 11 runs names in its run folder and its MLflow run
    a whole snapshot; runs submitted with the same code share one (one per code version: an edit
    of the tree while the workflow runs reaches only the jobs submitted after it)."""
    workdir, out = table3_tiny
    results = Results(workdir / "results")
    named = {p.parent.name: json.loads(p.read_text())["snapshot"] for p in (results.root / "runs").glob("*/code.json")}
    assert len(named) == 11
    assert sorted(p.name for p in results.code.iterdir()) == sorted(set(named.values()))  # no stray copy
    for h in set(named.values()):
        assert code_hash(package_files(results.code / h / "harness")) == h  # whole, and of its code
    store = Store.of(results)
    tagged = {r.data.tags["signature"]: r.data.tags["code_snapshot"]
              for r in store.client().search_runs([store.experiment_id()])}
    assert tagged == named
    assert all(f"[harness] code: snapshot {h}" in out.stdout + out.stderr for h in set(named.values()))
