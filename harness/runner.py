"""Run one stage as one MLflow run: what the launcher's jobs and the Optuna trials both call."""
from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path
from typing import Any

from harness.core import metrics as names
from harness.core.config import STAGES, RunConfig
from harness.core.layout import RunFolder
from harness.stages.context import StageContext
from harness.stages.distributed import SINGLE, Dist
from harness.tracking import StageTracker, Store


def stage_module(stage: str):
    """The module of a stage (harness.stages.<stage>): its `run(ctx)` trains and returns metrics."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return importlib.import_module(f"harness.stages.{stage}")


def run_stage(stage: str, cfg: RunConfig, run: RunFolder, *, store: Store, tags: dict[str, str],
              parent: RunFolder | None = None, dist: Dist = SINGLE) -> dict[str, float]:
    """Train one stage in this process inside its MLflow run (rank 0) and write its result file.

    The run's params are the resolved config; every epoch's metrics are logged as they come,
    the stage's results once more under `final_*` at the end. The result file, written last,
    is what tells Snakemake (and a second request) that the run is done.
    """
    module = stage_module(stage)
    if not dist.is_main:  # only rank 0 logs to MLflow and writes the run's files
        module.run(StageContext(cfg, run, None, parent, dist))
        return {}
    params = {**cfg.model_dump(mode="json"), "stage": stage, "parent": parent.signature if parent else "",
              "world_size": dist.world_size}
    with StageTracker(store, run, tags, params) as tracker:
        metrics = module.run(StageContext(cfg, run, tracker, parent, dist))
        tracker.log({names.final(k): v for k, v in metrics.items()}, step=0)
        result = {"stage": stage, "signature": run.signature, "metrics": metrics,
                  "mlflow_run_id": tracker.run_id, "tags": tags}
    write_json_atomic(run.result(stage), result)
    return metrics


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
