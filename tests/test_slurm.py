"""The slurm profile through a real Slurm cluster (cluster/start.sh), at scale tiny on the CPU.

Skipped with a reason when no cluster answers; under CI (CI=true) a missing cluster fails.
"""
import subprocess
import time

import pytest

from harness.core.config import dotted_to_nested
from harness.core.layout import Results
from harness.launch import ExecutorConfig, submit
from harness.studies import expand, load_study
from harness.tracking import Store

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

# the profile's partition and fake GPU, sized for this 2-core machine
SMALL = "executor={cpus_per_task: 1, mem_gb: 2, timeout_min: 20}"


def test_slurm_profile_runs_table3_at_tiny_scale(tmp_path, monkeypatch, snakemake, job_counts):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dry = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", SMALL, profile="slurm")
    assert dry.returncode == 0, dry.stderr
    assert job_counts(dry.stdout) == {"pretrain": 3, "linprobe": 3, "finetune": 3, "table3": 1}

    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", SMALL, profile="slurm")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    md = (tmp_path / "results" / "tables" / "table3.md").read_text()
    assert "Scale `tiny`" in md and "—" not in md.split("\n\n", 1)[1]  # every cell filled

    store = Store.of(Results(tmp_path / "results"))
    runs = store.client().search_runs([store.experiment_id()])
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}
    # every stage really ran as a Slurm job on the gpu partition, with the profile's resources
    for r in runs:
        run_dir = tmp_path / "results" / "runs" / r.data.tags["signature"]
        job_ids = [p.name.split("_")[0] for p in run_dir.glob("submitit/*/*_submitted.pkl")]
        assert len(job_ids) == 1
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_ids[0], "-o", "State,Partition,AllocTRES"],
                              capture_output=True, text=True).stdout
        assert acct.startswith("COMPLETED|gpu|") and "gres/gpu=1" in acct and "cpu=1" in acct


def test_unknown_partition_is_refused_before_submission(tmp_path, snakemake):
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", "executor={partition: nope}", profile="slurm")
    assert out.returncode != 0
    assert "partition 'nope' is unknown to Slurm; known: cpu, gpu" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_timeout_requeues_and_the_stage_continues(tmp_path, monkeypatch, recorder, run_stage_here):
    """submitit's timeout interrupt: the job checkpoints, Slurm requeues it, it resumes exactly."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cell = expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": 6}))[1]
    cfg, results = cell.config, Results(tmp_path / "results")
    run_dir = results.run(cell.signature("pretrain")).path
    executor = ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=2, mem_gb=2,
                              timeout_min=20, max_num_timeout=3)
    store = Store.of(results)
    job = submit("pretrain", cfg, results, executor, tracking_uri=store.uri, tags={"study": "test", "cell": "requeue"})
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists():  # let it finish an epoch first
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.5)
    job._interrupt(timeout=True)
    metrics = job.result()

    c = store.client()
    run = c.get_run((run_dir / "mlflow_run_id").read_text())
    assert run.info.status == "FINISHED"
    resumed = c.get_metric_history(run.info.run_id, "resumed_at_epoch")
    assert len(resumed) == 1 and 1 <= resumed[0].value < 6  # continued, not restarted
    sacct = subprocess.run(["sacct", "-n", "-P", "-j", str(job.job_id), "-o", "State", "-D", "-X"],
                           capture_output=True, text=True).stdout
    assert "REQUEUED" in sacct or "PREEMPTED" in sacct or "TIMEOUT" in sacct
    # the same losses as an uninterrupted run of the same config and seed
    by_epoch = {m.step: m.value for m in sorted(c.get_metric_history(run.info.run_id, "loss"),
                                                  key=lambda m: m.timestamp)}  # an epoch cut short is logged once
    losses = [by_epoch[e] for e in range(6)]
    straight = recorder()
    run_stage_here("pretrain", cfg, tmp_path / "straight", straight)
    assert losses == [m["loss"] for _, m in straight.logged]
    assert metrics["loss"] == straight.logged[-1][1]["loss"]


def test_a_rerun_waits_for_the_live_slurm_job_instead_of_submitting_again(tmp_path, monkeypatch):
    """The launcher dies (login node, Snakemake killed); asking again re-attaches to the Slurm job."""
    import json
    import shlex
    import signal
    import sys

    from harness.workflow import Plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = Plan("tiny", {"kind": "slurm", "partition": "cpu", "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 20},
                {"pretrain": {"epochs": 6}, "data": {"train_subset": 1024}}, only=["table3"])
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain")
    cmd = [sys.executable, "-m", "harness.launch", *shlex.split(plan.launch_args(sig, "pretrain")),
           *shlex.split(plan.job_args(sig, "pretrain"))]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = first.stdout.readline()
    assert "submitted job" in line
    first.send_signal(signal.SIGKILL)  # the launcher dies; its Slurm job does not
    first.wait()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    job_id = json.loads((tmp_path / "results" / "runs" / sig / "job.json").read_text())["job_id"]
    assert f"job {job_id} still runs; waiting for it" in second.stdout
    assert (tmp_path / "results" / "runs" / sig / "pretrain.json").exists()
    submitted = list((tmp_path / "results" / "runs" / sig / "submitit").glob("*/*_submitted.pkl"))
    assert len(submitted) == 1  # one job, never a second one on the same run folder
