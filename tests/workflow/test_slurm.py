"""The slurm profile through a real Slurm cluster (cluster/start.sh), at scale tiny on the CPU.

Skipped with a reason when no cluster answers; under CI (CI=true) a missing cluster fails.
"""
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import check_logged_to_server

from harness.core.layout import Results
from harness.run.tracking import Store

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

# the profile's partition and fake GPU, sized for this 2-core machine
SMALL = "executor={cpus_per_task: 1, mem_gb: 2, timeout_min: 20}"


def test_slurm_profile_runs_table3_at_tiny_scale(tmp_path, monkeypatch, snakemake, job_counts):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dry = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", SMALL, profile="slurm")
    assert dry.returncode == 0, dry.stderr
    assert job_counts(dry.stdout) == {"pretrain": 3, "linprobe": 4, "finetune": 4, "table3_plan": 1, "table3": 1}

    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", SMALL, profile="slurm")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    md = (tmp_path / "results" / "tables" / "table3.md").read_text()
    csv = pd.read_csv(tmp_path / "results" / "tables" / "table3.csv")
    assert "Scale `tiny`" in md and len(csv) == 8 and csv["ours"].notna().all()  # every cell filled

    store = Store.of(Results(tmp_path / "results"))
    runs = store.client().search_runs([store.experiment_id()])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}
    # every stage really ran as a Slurm job on the gpu partition, with the profile's resources
    for r in runs:
        run_dir = tmp_path / "results" / "runs" / r.data.tags["signature"]
        job_ids = [p.name.split("_")[0] for p in run_dir.glob("submitit/*/*_submitted.pkl")]
        assert len(job_ids) == 1
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_ids[0], "-o", "State,Partition,AllocTRES"],
                              capture_output=True, text=True).stdout
        assert acct.startswith("COMPLETED|gpu|") and "gres/gpu=1" in acct and "cpu=1" in acct


def test_slurm_profile_logs_table3_to_the_lab_tracking_server(tmp_path, monkeypatch, tracking_server, snakemake):
    """The jobs on the nodes reach the server at its reachable address, with the credentials of
    the workflow's environment (sbatch exports it), which no file of the run keeps."""
    for key, value in tracking_server.credentials().items():
        monkeypatch.setenv(key, value)
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", SMALL, f"tracking_uri={tracking_server.url}",
                    profile="slurm")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_logged_to_server(tmp_path, tracking_server, out)
    job = next((tmp_path / "results" / "runs").glob("*/submitit/*/*_submitted.pkl")).name.split("_")[0]
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,Partition"], capture_output=True, text=True)
    assert acct.stdout.startswith("COMPLETED|gpu")  # a Slurm job on the profile's partition, not a local one


def test_a_request_no_node_offers_is_refused_before_submission(tmp_path, snakemake):
    """The slurm profile's defaults (10 CPUs, 64 GB) on this 2-CPU node: one line, nothing submitted."""
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", profile="slurm")
    assert out.returncode != 0
    assert "partition 'gpu' has 0 node(s) with 10 CPUs" in out.stderr and "its largest node offers 2 CPUs" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_unknown_partition_is_refused_before_submission(tmp_path, snakemake):
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", "executor={partition: nope}", profile="slurm")
    assert out.returncode != 0
    assert "partition 'nope' is unknown to Slurm; known: cpu, gpu" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()


def launcher(tmp_path, monkeypatch, executor: dict, overrides: dict):
    """The command Snakemake would run for Table 3's M=2 pre-training, through the slurm executor."""
    import shlex
    import sys

    from harness.workflow import jobs
    from harness.workflow.plan import Plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = Plan("tiny", {"kind": "slurm", "partition": "cpu", "mem_gb": 2, **executor}, overrides, only=["table3"])
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain" and r.cells[0].setting == "square M=2")
    jobs.write_job_files(plan)  # Snakemake's onstart
    cmd = [sys.executable, "-m", "harness.run.launch", *shlex.split(plan.launch_args(sig, "pretrain")),
           *shlex.split(jobs.job_args(plan, sig, "pretrain"))]
    return cmd, plan.results.run(sig), plan.runs[sig].config


def job_id_once_it_trains(run, proc) -> str:
    import json

    deadline = time.time() + 300
    while not run.progress.exists():  # an epoch done: now a fault costs something
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the launcher ended (rc {proc.returncode}) before an epoch was done:\n"
                        + proc.communicate()[0][-3000:])
        time.sleep(0.5)
    return str(json.loads(run.job.read_text())["job_id"])


def sacct_states(job_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.split("\n") if line.strip()]


def mlflow_run(run):
    store = Store.of(Results(run.path.parent.parent))
    client = store.client()
    return client, client.get_run(run.mlflow_run_id.read_text().strip())


@pytest.mark.parametrize("fault", ["scontrol requeue", "scancel --signal=TERM",
                                   pytest.param("time limit", marks=pytest.mark.long)])  # 2-min attempts: ~8 min
def test_a_preempted_or_timed_out_stage_resumes_from_its_step(tmp_path, monkeypatch, fault, recorder, run_stage_here):
    """A real Slurm fault mid-epoch: the job checkpoints at its next step and is requeued; it ends
    with the losses of an uninterrupted run, and sacct shows the requeue."""
    long = fault == "time limit"
    # time limit: 2 min per attempt, the signal asked for 30 s before it, which Slurm sends 60-90 s
    # into the attempt (it checks on a 30 s period); the stage outlasts that (~120 s of training here,
    # more on a loaded machine, hence the many requeues allowed)
    cmd, run, cfg = launcher(tmp_path, monkeypatch, {"cpus_per_task": 2, "timeout_min": 2 if long else 20,
                                                     "signal_delay_s": 30, "max_num_timeout": 40},
                             {"pretrain": {"epochs": 60 if long else 8},
                              "data": {"train_subset": 2048 if long else 1024}})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job_id = job_id_once_it_trains(run, proc)
    if fault == "scontrol requeue":
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    elif fault == "scancel --signal=TERM":
        subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped on request at epoch" in out  # the job's own line: it kept its step
    assert "resuming at epoch" in out  # the requeued job's first line, echoed by the launcher
    assert "REQUEUED" in sacct_states(job_id) or "PREEMPTED" in sacct_states(job_id)
    client, mlrun = mlflow_run(run)
    assert mlrun.info.status == "FINISHED"
    resumed = [m.value for m in client.get_metric_history(mlrun.info.run_id, "pretrain/resumed_at_epoch")]
    assert resumed and all(v % 1 for v in resumed)  # resumed mid-epoch, at the step it had reached
    by_epoch = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "pretrain/loss")}
    straight = recorder()
    run_stage_here("pretrain", cfg, tmp_path / "straight", straight)
    assert [by_epoch[e] for e in range(cfg.pretrain.epochs)] == [m["loss"] for _, m in straight.logged]


@pytest.mark.parametrize("fault,state,status", [("scancel", "CANCELLED", "KILLED"),
                                                ("kill -9 the task", "FAILED", "FAILED")])
def test_a_job_that_dies_leaves_its_mlflow_run_failed_and_asking_again_finishes_it(
        tmp_path, monkeypatch, fault, state, status):
    cmd, run, cfg = launcher(tmp_path, monkeypatch, {"cpus_per_task": 2, "timeout_min": 20},
                             {"pretrain": {"epochs": 8}, "data": {"train_subset": 1024}})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job_id = job_id_once_it_trains(run, proc)
    if fault == "scancel":  # the user's cancel: the job checkpoints its step and is not requeued
        subprocess.run(["scancel", job_id], check=True)
    else:  # the task dies outside Slurm's control (the kernel's OOM killer, a segfault)
        subprocess.run(["pkill", "-KILL", "-f", f"submitit.core._submit {run.submitit.resolve()}"], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]
    client, mlrun = mlflow_run(run)
    ended = sacct_states(job_id)[-1]
    assert ended.startswith(state) and f"FAILED: Slurm job {job_id} {ended}" in out
    assert mlrun.info.status == status and mlrun.data.tags["failure"] == f"Slurm job {job_id} {ended}"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    client, mlrun = mlflow_run(run)
    assert mlrun.info.status == "FINISHED"
    assert client.get_metric_history(mlrun.info.run_id, "pretrain/resumed_at_epoch")  # continued, not restarted


def test_a_request_no_node_can_serve_is_cancelled_with_one_line(tmp_path, monkeypatch):
    """Submitted past the planner's check (the launcher alone), a job that waits for 8 CPUs on a
    2-CPU node is cancelled at once with the reason Slurm gives."""
    import json

    cmd, run, _ = launcher(tmp_path, monkeypatch, {"cpus_per_task": 1, "timeout_min": 20}, {})
    job_file = Path(cmd[cmd.index("--job") + 1])
    job = json.loads(job_file.read_text())
    job["executor"] = {**job["executor"], "cpus_per_task": 8}  # what the planner would have refused
    cmd[cmd.index("--job") + 1] = str(tmp_path / "job-8-cpus.json")
    (tmp_path / "job-8-cpus.json").write_text(json.dumps(job))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "can never start: PartitionConfig" in out.stderr or "can never start" in out.stderr, out.stderr
    job_id = str(json.loads(run.job.read_text())["job_id"])
    assert sacct_states(job_id)[-1].startswith("CANCELLED")


def test_a_rerun_waits_for_the_live_slurm_job_instead_of_submitting_again(tmp_path, monkeypatch):
    """The launcher dies (login node, Snakemake killed); asking again re-attaches to the Slurm job."""
    import json
    import shlex
    import signal
    import sys

    from harness.workflow import jobs
    from harness.workflow.plan import Plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = Plan("tiny", {"kind": "slurm", "partition": "cpu", "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 20},
                {"pretrain": {"epochs": 6}, "data": {"train_subset": 1024}}, only=["table3"])
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain")
    jobs.write_job_files(plan)
    cmd = [sys.executable, "-m", "harness.run.launch", *shlex.split(plan.launch_args(sig, "pretrain")),
           *shlex.split(jobs.job_args(plan, sig, "pretrain"))]
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


def test_waiting_runs_cost_the_scheduler_at_most_one_rpc_per_second(tmp_path, monkeypatch):
    """Issue 21's bar, counted with sdiag: a workflow with six runs waiting on their Slurm jobs
    (held back with `--begin`, so that they wait without training) sends slurmctld at most one
    RPC per second in all, its planning, submissions and waiting included; waiting alone, much
    less (one squeue for every job every poll_s = 30 s). sdiag counts every RPC of the user, so
    a window in which other jobs were in the queue (another test, another engineer) says
    nothing about this workflow's and is measured again."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("waiting_runs", root / "benchmarks" / "waiting_runs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for attempt in range(3):
        m = bench.measure(6, window_s=60, repo=root, workdir=tmp_path / f"attempt{attempt}")
        if not m["foreign_jobs"]:
            break
    else:
        pytest.skip(f"other jobs shared the cluster in every window ({m['foreign_jobs']}): sdiag cannot tell "
                    f"this workflow's RPCs from theirs")
    assert m["rpcs_per_s_from_start"] <= 1.0, m
    assert m["rpcs_per_s_waiting"] <= 0.3, m  # 3 RPCs per squeue, one per 30 s, and sdiag's own
    assert m["login_node"]["launchers"] == 6


def scontrol(*args: str) -> None:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def wait_for_line(path, text: str, proc, timeout_s: float = 300) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        seen = path.read_text() if path.exists() else ""
        if text in seen:
            return seen
        assert proc.poll() is None, seen[-3000:]
        time.sleep(1)
    raise AssertionError(f"no {text!r} within {timeout_s} s:\n{seen[-3000:]}")


def table3_waiting_on(tmp_path, monkeypatch, block, unblock, expect: str) -> str:
    """Table 3 at tiny through Slurm while `block()` keeps the node from running jobs: its runs
    say once why they wait and keep waiting; after `unblock()` (an admin's resume, or the end of
    a reservation) the same workflow completes the table without being asked again."""
    import sys
    from pathlib import Path

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    log = tmp_path / "snakemake.log"
    block()
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", "--directory",
                                     str(tmp_path), "table3", "--config", "scale=tiny",
                                     "executor={cpus_per_task: 1, mem_gb: 2, timeout_min: 20, poll_s: 2}"],
                                    cwd=Path(__file__).resolve().parents[2], stdout=out, stderr=subprocess.STDOUT)
        seen = wait_for_line(log, expect, proc)
        time.sleep(10)  # several polls later: still waiting, nothing cancelled
        assert proc.poll() is None and "can never start" not in log.read_text()
    finally:
        unblock()
    assert proc.wait(timeout=1200) == 0, log.read_text()[-3000:]
    assert (tmp_path / "results" / "tables" / "table3.md").exists()
    text = log.read_text()
    first = next(line for line in text.splitlines() if expect in line)
    assert text.count(first) == 1  # said once per reason, not at every poll
    return seen


def test_a_drained_node_is_a_wait_and_the_table_completes_after_resume(tmp_path, monkeypatch):
    seen = table3_waiting_on(
        tmp_path, monkeypatch,
        lambda: scontrol("update", "nodename=localhost", "state=drain", "reason=maintenance-test"),
        lambda: scontrol("update", "nodename=localhost", "state=resume"),
        "waits: ")
    # Slurm 22.05 says either, depending on when it looked (both seen on this cluster)
    assert ("waits: Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions "
            "(the nodes it needs are down, drained or reserved); it starts once that clears" in seen
            or "waits: ReqNodeNotAvail, UnavailableNodes:localhost (a node it needs is drained, down, reserved or "
               "not responding); it starts once that clears" in seen), seen[-3000:]


def test_a_maintenance_reservation_is_a_wait_until_it_ends(tmp_path, monkeypatch):
    """A reservation that starts now and lasts a minute: the runs wait for it, then run."""
    name = f"maint-test-{int(time.time())}"
    try:
        table3_waiting_on(
            tmp_path, monkeypatch,
            lambda: scontrol("create", "reservation", f"reservationname={name}", "starttime=now", "duration=1",
                             "nodes=localhost", "users=root", "flags=maint,ignore_jobs"),
            lambda: None,  # nobody lifts it: it ends by itself
            "waits: ReqNodeNotAvail, Reserved for maintenance")
    finally:
        subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)  # if it has not ended
