"""Run one stage as a submitit job (local executor or Slurm) and wait for it.

Snakemake calls this once per stage run:
    python -m harness.launch --stage pretrain --results results --config '<json>' ...
It writes the run's resolved config into results/runs/<signature>/, submits a `StageJob` with a
fresh submitit folder for this attempt (a reused Slurm job id can never return an old result),
and waits. The job checkpoints every epoch; on a Slurm timeout or preemption submitit requeues
it (Checkpointable) and it resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import submitit
from pydantic import BaseModel, ConfigDict, Field

from harness import slurm
from harness.core.config import STAGES, RunConfig
from harness.core.layout import Results, RunFolder
from harness.science import methods


class ExecutorConfig(BaseModel):
    """Where stage jobs run: the profile's `executor` block (profiles/*/harness.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "slurm"] = "local"
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, gt=0)  # also the torch threads of each task
    tasks_per_node: int = Field(1, gt=0)  # data-parallel processes per node (one per GPU)
    nodes: int = Field(1, gt=0)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(24 * 60, gt=0)  # per attempt; Slurm requeues on timeout
    max_num_timeout: int = Field(10, ge=0)  # requeues after the time limit's signal
    signal_delay_s: int = Field(90, gt=0)  # the time-limit signal comes this long before the limit
    additional: dict[str, Any] = {}  # other sbatch options (account, qos, constraint, ...)


class StageJob(submitit.helpers.Checkpointable):
    """The callable submitit runs; calling it again (after a requeue) resumes the stage.

    SIGTERM (a preemption, `scontrol requeue`, `scancel --signal=TERM`) and submitit's
    time-limit signal ask the stage to stop after its current step: it checkpoints that step
    (data position and random state included), then submitit requeues the job, which continues
    from that step. A local job stops the same way and is not requeued."""

    def __init__(self, stage: str, config: dict, results: str, signature: str, parent: str | None,
                 tags: dict[str, str], tracking_uri: str, threads: int | None = None):
        self.stage, self.config, self.results, self.signature = stage, config, results, signature
        self.parent, self.tags, self.tracking_uri, self.threads = parent, tags, tracking_uri, threads

    def __call__(self) -> dict[str, float]:
        from harness.core.errors import StageStopped
        from harness.runner import run_stage
        from harness.stages import distributed, engine
        from harness.tracking import Store

        results = Results(Path(self.results))
        engine.set_threads(self.threads)
        env = submitit.JobEnvironment()
        requeue = signal.getsignal(env._usr_sig())  # submitit's: checkpoint the callable, requeue, exit
        asked: list[int] = []
        stop_signals = {signal.SIGTERM, env._usr_sig()} | ({signal.SIGINT} if env.cluster == "local" else set())
        for signum in stop_signals:  # SIGINT: Ctrl-C on a local workflow
            signal.signal(signum, lambda signum, _frame: asked.append(signum))
        dist = distributed.setup()
        parent = results.run(self.parent) if self.parent else None
        try:
            metrics = run_stage(self.stage, RunConfig.model_validate(self.config), results.run(self.signature),
                                store=Store(self.tracking_uri, results), tags=self.tags, parent=parent, dist=dist,
                                stop=lambda: bool(asked))
        except StageStopped as stopped:
            print(f"[harness] {stopped}", flush=True)
            if env.cluster == "slurm" and slurm.final_state(os.environ.get("SLURM_JOB_ID", "")).startswith("CANCELLED"):
                print("[harness] the job was cancelled (scancel): not requeued", flush=True)  # the user's word
            elif env.cluster == "slurm" and callable(requeue):
                try:
                    requeue(asked[0], None)  # checkpoints this callable, requeues the job, exits
                except subprocess.CalledProcessError:  # `scontrol requeue` is already under way
                    print("[harness] Slurm is requeueing this job already", flush=True)
                    sys.exit(-1)  # no result: the job starts again and resumes
            raise
        distributed.teardown(dist)
        return metrics


def stop_local_job(job: submitit.Job, grace_s: float = 300.0) -> None:
    """Stop a local job the way Slurm stops one: SIGTERM to its controller (the job id is its
    pid), which forwards it to the tasks; they checkpoint their current step and exit. Waits for
    that (reaping the process), and cancels the job if it outlives `grace_s`."""
    try:
        os.kill(int(job.job_id), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        return
    deadline = time.time() + grace_s
    while not job.done() and time.time() < deadline:
        time.sleep(0.2)
    if not job.done():
        job.cancel(check=False)


def make_executor(executor: ExecutorConfig, folder: Path) -> submitit.Executor:
    """submitit executor; the cluster is always explicit (AutoExecutor would pick Slurm whenever
    Slurm's tools are installed)."""
    if executor.kind == "local":
        if executor.nodes > 1:
            raise ValueError("the local executor runs on one node; nodes > 1 needs Slurm")
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        ex.update_parameters(timeout_min=executor.timeout_min, tasks_per_node=executor.tasks_per_node)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=executor.max_num_timeout)
    params: dict[str, Any] = {"timeout_min": executor.timeout_min, "gpus_per_node": executor.gpus_per_node,
                              "slurm_signal_delay_s": executor.signal_delay_s,
                              "cpus_per_task": executor.cpus_per_task, "tasks_per_node": executor.tasks_per_node,
                              "nodes": executor.nodes}
    if executor.mem_gb:
        params["mem_gb"] = executor.mem_gb
    if executor.partition:
        params["slurm_partition"] = executor.partition
    if executor.additional:
        params["slurm_additional_parameters"] = dict(executor.additional)
    ex.update_parameters(**params)
    return ex


def submit(stage: str, cfg: RunConfig, results: Results, executor: ExecutorConfig, *, tracking_uri: str,
           parent: str | None = None, tags: dict[str, str] | None = None):
    """Write the run's config into its folder and submit its StageJob; returns the submitit job."""
    results = Results(results.root.resolve())
    run = results.run(methods.signature(cfg, stage))
    run.write_config(methods.stage_config(cfg, stage), cfg.model_dump(mode="json"))
    attempt = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ex = make_executor(executor, run.submitit / attempt)
    ex.update_parameters(name=f"{stage}-{run.signature}")
    job_tags = {"signature": run.signature, "stage": stage, **(tags or {})}
    if parent:
        job_tags["parent"] = parent
    job = StageJob(stage, cfg.model_dump(mode="json"), str(results.root), run.signature, parent, job_tags,
                   tracking_uri, executor.cpus_per_task)
    return ex.submit(job)


def live_slurm_job(run: RunFolder):
    """The Slurm job a previous launcher submitted for this run and that still lives, if any.

    When Snakemake (or the login node) dies, Slurm jobs go on; asking for the run again waits
    for that job instead of starting a second one on the same run folder. squeue is asked, not
    accounting: a job submitted a moment ago may not be in sacct yet.
    """
    if not run.job.exists():
        return None
    info = json.loads(run.job.read_text())
    if info.get("cluster") != "slurm":
        return None
    state = slurm.queue_state(str(info["job_id"]))
    if state is None or state[0] not in slurm.LIVE:
        return None
    return submitit.SlurmJob(folder=info["folder"], job_id=info["job_id"])


class Unservable(RuntimeError):
    """The job waits for something Slurm will never give it."""


def follow(job, name: str, cluster: str, poll_s: float = 2.0) -> None:
    """Until the job ends, echo what its first task prints (one progress line per epoch) to
    this launcher's output, which Snakemake shows: local and Slurm jobs alike. A Slurm job's
    state and reason are printed when they change; one that waits for what can never come
    (PartitionConfig, ...) is cancelled and the launcher fails with one line."""
    log, offset, last = Path(job.paths.stdout), 0, None

    def echo() -> int:
        if not log.exists():
            return offset
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        for line in chunk[:end].decode(errors="replace").splitlines():
            if not line.startswith("submitit INFO"):  # the job's own lines, not submitit's
                print(f"  {line}", flush=True)
        return offset + end

    while not job.done():
        offset = echo()
        if cluster == "slurm":
            state = slurm.queue_state(job.job_id)
            if state is not None and state != last:
                last = state
                print(f"[harness] {name}: Slurm job {job.job_id} {state[0]}" + (f" ({state[1]})" if state[1] and
                      state[1] != "None" else ""), flush=True)
                if state[0] in slurm.WAITING and slurm.never_clears(state[1]):
                    slurm.cancel(job.job_id)
                    raise Unservable(f"Slurm job {job.job_id} can never start: {state[1]} (the partition or account "
                                     f"cannot give what it asks; see the executor settings); cancelled")
        time.sleep(poll_s)
    echo()


def mark_failed(store_uri: str, results: Results, run: RunFolder, reason: str, killed: bool) -> None:
    """A job that ended without its result leaves its MLflow run FAILED (or KILLED), with why."""
    if not run.mlflow_run_id.exists():
        return
    from harness.tracking import Store, retry

    client = Store(store_uri, results).client()
    run_id = run.mlflow_run_id.read_text().strip()
    retry(lambda: client.set_tag(run_id, "failure", reason))
    if retry(lambda: client.get_run(run_id)).info.status == "RUNNING":
        retry(lambda: client.set_terminated(run_id, status="KILLED" if killed else "FAILED"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--results", required=True, type=Path, help="the results folder")
    ap.add_argument("--config", required=True, help="resolved RunConfig as JSON")
    ap.add_argument("--signature", default=None, help="the run's signature; the config must have it")
    ap.add_argument("--parent", default=None, help="signature of the pre-training run (evaluation stages)")
    ap.add_argument("--executor", default="{}", help="executor settings as JSON")
    ap.add_argument("--tracking-uri", required=True, help="the MLflow store every job logs to")
    ap.add_argument("--tags", default="{}", help="MLflow tags as JSON")
    args = ap.parse_args(argv)
    cfg = methods.check(RunConfig.model_validate_json(args.config))
    executor = ExecutorConfig.model_validate_json(args.executor)
    results = Results(args.results)
    run = results.run(methods.signature(cfg, args.stage))
    if args.signature is not None and args.signature != run.signature:
        print(f"[harness] {args.stage}: the config given has signature {run.signature}, not {args.signature}",
              file=sys.stderr)
        return 2
    done = run.result(args.stage)
    if done.exists():  # finished meanwhile (e.g. by a job that outlived an earlier launcher)
        print(f"[harness] {args.stage} {run.signature} already done: {json.loads(done.read_text())['metrics']}")
        return 0
    job = live_slurm_job(run) if executor.kind == "slurm" else None
    if job is None and run.job.exists():  # an earlier attempt ended without its result: say so in MLflow
        earlier = json.loads(run.job.read_text())
        ended = slurm.final_state(str(earlier["job_id"])) if earlier["cluster"] == "slurm" else "stopped"
        mark_failed(args.tracking_uri, results, run, f"{earlier['cluster']} job {earlier['job_id']} {ended}",
                    killed=not ended.startswith(("FAILED", "OUT_OF_MEMORY")))
    if job is not None:
        print(f"[harness] {args.stage} {run.signature}: job {job.job_id} still runs; waiting for it", flush=True)
    else:
        job = submit(args.stage, cfg, results, executor, tracking_uri=args.tracking_uri, parent=args.parent,
                     tags=json.loads(args.tags))
        run.job.write_text(json.dumps({"cluster": executor.kind, "job_id": job.job_id, "folder": str(job.paths.folder)}))
        print(f"[harness] {args.stage} {run.signature}: submitted job {job.job_id} "
              f"(logs: {job.paths.stdout})", flush=True)
    if executor.kind == "local":  # a stopped workflow stops its local jobs (Slurm jobs go on)
        def stop(signum, _frame):
            stop_local_job(job)
            sys.exit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    name = f"{args.stage} {run.signature}"
    try:
        follow(job, name, executor.kind)
        metrics = job.results()[0]  # rank 0's (one result per task)
    except Exception as err:  # the job's own traceback is in its submitit logs
        ended = slurm.final_state(job.job_id) if executor.kind == "slurm" else "FAILED"
        settled = executor.kind == "slurm" and ended not in slurm.LIVE | {"UNKNOWN"}
        reason = (f"Slurm job {job.job_id} {ended}" if settled else  # else: the job's own last error line
                  f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")[:500]
        if isinstance(err, Unservable):
            reason = str(err)
        mark_failed(args.tracking_uri, results, run, reason,
                    killed=ended.startswith(("CANCELLED", "PREEMPTED", "TIMEOUT", "NODE_FAIL")))
        print(f"[harness] {name} FAILED: {reason}; its MLflow run says so, and asking again resumes it from its "
              f"last checkpoint\n[harness] logs: {job.paths.stdout} {job.paths.stderr}", file=sys.stderr, flush=True)
        return 1
    print(f"[harness] {args.stage} {run.signature} done: {metrics}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
