"""Run one stage as a submitit job (local executor or Slurm) and wait for it.

Snakemake calls this once per stage run:
    python -m harness.launch --stage pretrain --run-dir results/runs/<signature> --config '<json>' ...
It writes the run's resolved config, submits a `StageJob` with a fresh submitit folder for
this attempt (a reused Slurm job id can never return an old result), and waits. The job
checkpoints every epoch; on a Slurm timeout or preemption submitit requeues it
(Checkpointable) and it resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import submitit
import yaml
from pydantic import BaseModel, ConfigDict, Field

from harness.config import RunConfig, signature, stage_config



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
    max_num_timeout: int = Field(10, ge=0)
    additional: dict[str, Any] = {}  # other sbatch options (account, qos, constraint, ...)


class StageJob(submitit.helpers.Checkpointable):
    """The callable submitit runs; calling it again (after a requeue) resumes the stage."""

    def __init__(self, stage: str, config: dict, run_dir: str, results_dir: str, parent: str | None,
                 tags: dict[str, str], threads: int | None = None, stop_after: int | None = None):
        self.stage, self.config, self.run_dir, self.results_dir = stage, config, run_dir, results_dir
        self.parent, self.tags, self.threads, self.stop_after = parent, tags, threads, stop_after

    def __call__(self) -> dict[str, float]:
        from harness import distributed, engine
        from harness.tracking import StageTracker

        cfg = RunConfig.model_validate(self.config)
        run_dir, results_dir = Path(self.run_dir), Path(self.results_dir)
        engine.set_threads(self.threads)
        dist = distributed.setup()
        stage = importlib.import_module(f"harness.{self.stage}")
        parent_dir = results_dir / "runs" / self.parent if self.parent else None
        if not dist.is_main:  # only rank 0 logs to MLflow and writes the run's files
            stage.run(cfg, run_dir, None, parent_dir=parent_dir, stop_after=self.stop_after, dist=dist)
            distributed.teardown(dist)
            return {}
        params = {**cfg.model_dump(mode="json"), "stage": self.stage, "parent": self.parent or "",
                  "world_size": dist.world_size}
        with StageTracker(results_dir, run_dir, self.tags, params) as tracker:
            metrics = stage.run(cfg, run_dir, tracker, parent_dir=parent_dir, stop_after=self.stop_after, dist=dist)
            tracker.log({f"final_{k}": v for k, v in metrics.items()}, step=0)
            if self.stage == "pretrain" and cfg.method == "randsac":
                from harness.pictures import reconstruction

                tracker.log_artifact(reconstruction(cfg, run_dir))
            result = {"stage": self.stage, "signature": run_dir.name, "metrics": metrics,
                      "mlflow_run_id": tracker.run_id, "tags": self.tags}
        write_json_atomic(run_dir / f"{self.stage}.json", result)
        distributed.teardown(dist)
        return metrics


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


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


def submit(stage: str, cfg: RunConfig, run_dir: Path, executor: ExecutorConfig, *, parent: str | None = None,
           tags: dict[str, str] | None = None, stop_after: int | None = None):
    """Write the run's config and submit its StageJob; returns the submitit job."""
    run_dir = Path(run_dir).resolve()
    expected = signature(cfg, stage)
    if run_dir.name != expected:
        raise ValueError(f"run folder {run_dir.name} does not match the config's {stage} signature {expected}")
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"stage_config": stage_config(cfg, stage), "config": cfg.model_dump(mode="json")}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    attempt = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ex = make_executor(executor, run_dir / "submitit" / attempt)
    ex.update_parameters(name=f"{stage}-{run_dir.name}")
    job_tags = {"signature": run_dir.name, "stage": stage, **(tags or {})}
    if parent:
        job_tags["parent"] = parent
    job = StageJob(stage, cfg.model_dump(mode="json"), str(run_dir), str(run_dir.parent.parent), parent,
                   job_tags, executor.cpus_per_task, stop_after)
    return ex.submit(job)


LIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                     "RESIZING", "SUSPENDED"}


def live_slurm_job(run_dir: Path):
    """The Slurm job a previous launcher submitted for this run and that still lives, if any.

    When Snakemake (or the login node) dies, Slurm jobs go on; asking for the run again waits
    for that job instead of starting a second one on the same run folder. squeue is asked, not
    accounting: a job submitted a moment ago may not be in sacct yet.
    """
    record = Path(run_dir) / "job.json"
    if not record.exists():
        return None
    info = json.loads(record.read_text())
    if info.get("cluster") != "slurm":
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(info["job_id"]), "-o", "%T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    states = set(out.stdout.split())
    if out.returncode != 0 or not states & LIVE_SLURM_STATES:
        return None
    return submitit.SlurmJob(folder=info["folder"], job_id=info["job_id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", required=True, choices=["pretrain", "linprobe", "finetune"])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--config", required=True, help="resolved RunConfig as JSON")
    ap.add_argument("--parent", default=None, help="signature of the pre-training run (evaluation stages)")
    ap.add_argument("--executor", default="{}", help="executor settings as JSON")
    ap.add_argument("--tags", default="{}", help="MLflow tags as JSON")
    args = ap.parse_args(argv)
    cfg = RunConfig.model_validate_json(args.config)
    executor = ExecutorConfig.model_validate_json(args.executor)
    done = args.run_dir / f"{args.stage}.json"
    if done.exists():  # finished meanwhile (e.g. by a job that outlived an earlier launcher)
        print(f"[harness] {args.stage} {args.run_dir.name} already done: {json.loads(done.read_text())['metrics']}")
        return 0
    job = live_slurm_job(args.run_dir) if executor.kind == "slurm" else None
    if job is not None:
        print(f"[harness] {args.stage} {args.run_dir.name}: job {job.job_id} still runs; waiting for it", flush=True)
    else:
        job = submit(args.stage, cfg, args.run_dir, executor, parent=args.parent, tags=json.loads(args.tags))
        (args.run_dir / "job.json").write_text(json.dumps(
            {"cluster": executor.kind, "job_id": job.job_id, "folder": str(job.paths.folder)}))
        print(f"[harness] {args.stage} {args.run_dir.name}: submitted job {job.job_id} "
              f"(logs: {job.paths.stdout})", flush=True)
    if executor.kind == "local":  # a stopped workflow stops its local jobs (Slurm jobs go on)
        def stop(signum, _frame):
            job.cancel(check=False)
            sys.exit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        metrics = job.results()[0]  # rank 0's (one result per task)
    except Exception as err:  # the job's own traceback is in its submitit logs
        print(f"[harness] {args.stage} {args.run_dir.name} FAILED: {err}\n"
              f"[harness] logs: {job.paths.stdout} {job.paths.stderr}", file=sys.stderr, flush=True)
        return 1
    print(f"[harness] {args.stage} {args.run_dir.name} done: {metrics}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
