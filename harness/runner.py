"""Run one stage as one MLflow run: what the launcher's jobs and the Optuna trials both call."""
from __future__ import annotations

import getpass
import importlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.core import metrics as names
from harness.core.config import STAGES, RunConfig
from harness.core.layout import RunFolder
from harness.science import methods
from harness.stages.context import StageContext
from harness.stages.distributed import SINGLE, Dist
from harness.tracking import StageTracker, Store, flatten, git_commit


def stage_module(stage: str):
    """The module of a stage (harness.stages.<stage>): its `run(ctx)` trains and returns metrics."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return importlib.import_module(f"harness.stages.{stage}")


def run_stage(stage: str, cfg: RunConfig, run: RunFolder, *, store: Store, tags: dict[str, str],
              parent: RunFolder | None = None, dist: Dist = SINGLE, stop=None) -> dict[str, float]:
    """Train one stage in this process inside its MLflow run (rank 0) and write its result file.

    The MLflow run: named and tagged by the workflow (`tags`: table, cell, ...), plus what this
    run is (stage, signature, seed, the dataset that ran, its parent) and where it came from
    (source, git commit, user); nested under its pre-training run; its params are what its
    signature hashes; its metrics `<stage>/<name>` per epoch and `<stage>/final_<name>` at the
    end; its config, dataset (an MLflow input) and system metrics logged. The result file,
    written last, is what tells Snakemake (and a second request) that the run is done. `stop()`
    is asked after every training step: true, the stage checkpoints that step and raises
    StageStopped.
    """
    module = stage_module(stage)
    label = tags.get("mlflow.runName") or f"{stage} {run.signature}"
    if not dist.is_main:  # only rank 0 logs to MLflow and writes the run's files
        module.run(StageContext(cfg, run, None, parent, dist, name=label, stop=stop))
        return {}
    run.write_config(methods.stage_config(cfg, stage), cfg.model_dump(mode="json"))
    tags = {**tags, "stage": stage, "signature": run.signature, "seed": str(cfg.seed), "dataset": cfg.data.name,
            "world_size": str(dist.world_size), "mlflow.source.type": "JOB",
            "mlflow.source.name": f"harness.stages.{stage}", "mlflow.source.git.commit": git_commit(),
            "mlflow.user": getpass.getuser()}
    if parent is not None:
        tags["parent"] = parent.signature
        if parent.mlflow_run_id.exists():  # nested under the pre-training run it reads
            tags["mlflow.parentRunId"] = parent.mlflow_run_id.read_text().strip()
    params = {k: v for k, v in flatten(methods.stage_config(cfg, stage)).items() if k not in ("stage", "parent")}
    with StageTracker(store, run, tags, params, prefix=stage) as tracker:
        tracker.log_artifact(run.config)
        with system_metrics(store, tracker.run_id):
            metrics = module.run(StageContext(cfg, run, tracker, parent, dist, name=label, stop=stop))
        tracker.log({names.final(k): v for k, v in metrics.items()}, step=0)
        result = {"stage": stage, "signature": run.signature, "metrics": metrics,
                  "mlflow_run_id": tracker.run_id, "tags": tags}
    write_json_atomic(run.result(stage), result)
    return metrics


@contextmanager
def system_metrics(store: Store, run_id: str):
    """MLflow's system metrics (CPU, memory, disk, network; GPU where nvidia-ml-py sees one),
    sampled every 10 s or every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds. The samples
    taken since the last logged step are logged at the end: MLflow's monitor drops them, so a
    stage shorter than one interval (a linear probe on cached features) would log none."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    interval_s = float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", 10))
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=store.uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()  # joins its thread: what it collected and did not log is still there
        last = monitor.aggregate_metrics()
        if last:
            monitor.publish_metrics(last)
            monitor.mlflow_logger.flush()


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
