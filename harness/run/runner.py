"""Run one stage as one MLflow run: what the launcher's jobs and the Optuna trials both call."""
from __future__ import annotations

import getpass
import importlib
import json
from pathlib import Path

from harness.core import metrics as names
from harness.core.config import RunConfig
from harness.core.files import write_json_atomic
from harness.core.fingerprint import git_state, package_root
from harness.core.stages import declared
from harness.core.layout import RunFolder
from harness.science import methods
from harness.stages.context import StageContext
from harness.stages.distributed import SINGLE, Dist
from harness.run.tracking import Forwarder, StageTracker, Store, flatten


def torch_threads() -> int:
    """This process's torch threads: a CPU run's numbers depend on them (summation order)."""
    import torch

    return torch.get_num_threads()


def stage_module(stage: str):
    """The module of a stage (harness.stages.<stage>): its `run(ctx)` trains and returns metrics."""
    return importlib.import_module(declared(stage).module)


def run_stage(stage: str, cfg: RunConfig, run: RunFolder, *, store: Store, tags: dict[str, str],
              parent: RunFolder | None = None, dist: Dist = SINGLE, stop=None,
              forwarder: Forwarder | None = None) -> dict[str, float]:
    """Train one stage in this process inside its MLflow run (rank 0) and write its result file.

    The MLflow run: named and tagged by the workflow (`tags`: table, cell, ...), plus what this
    run is (stage, signature, seed, the dataset that ran, its parent) and where it came from
    (source, git commit, user) and the code it computes with (`code_record`: tags
    `code.fingerprint`, `code.git_dirty`, `code.git_diff`); nested under its pre-training run;
    its params are what its signature hashes and, `code.<module>`, the hash of each module of
    its code; its metrics `<stage>/<name>` per epoch and `<stage>/final_<name>` at the end; its
    config, dataset (an MLflow input) and system metrics logged. All of it goes through the
    stage's tracking spool, which a forwarder process carries to the store (harness.run.spool,
    harness.run.forwarder): the stage neither imports MLflow nor waits for it. The result file (metrics,
    MLflow run, tags, `code`, `superseded`: how many earlier results of the run were kept
    aside when it was started over with newer code), written last, is what tells Snakemake (and a second request)
    that the run is done. `stop()` is asked after every training step: true, the stage
    checkpoints that step and raises StageStopped.
    """
    module = stage_module(stage)
    label = tags.get("mlflow.runName") or f"{stage} {run.signature}"
    if not dist.is_main:  # only rank 0 logs to MLflow and writes the run's files
        module.run(StageContext(cfg, run, None, parent, dist, name=label, stop=stop))
        return {}
    run.write_config(methods.stage_config(cfg, stage), cfg.model_dump(mode="json"))
    code = code_record(stage, cfg, run)
    tags = {**tags, "stage": stage, "signature": run.signature, "seed": str(cfg.seed), "dataset": cfg.data.name,
            "world_size": str(dist.world_size), "torch_threads": str(torch_threads()), "mlflow.source.type": "JOB",
            "mlflow.source.name": f"harness.stages.{stage}", "mlflow.source.git.commit": code["git"]["commit"],
            "mlflow.user": getpass.getuser(), "code.fingerprint": code["fingerprint"],
            "code.git_dirty": str(code["git"]["dirty"]), "code.git_diff": str(code["git"]["diff"])}
    if parent is not None:
        tags["parent"] = parent.signature  # and nested under its MLflow run, once the forwarder knows its id
    params = {k: v for k, v in flatten(methods.stage_config(cfg, stage)).items() if k not in ("stage", "parent")}
    params |= {f"code.{module}": digest for module, digest in code["modules"].items()}
    with StageTracker(store, run, tags, params, prefix=stage, parent=parent, forwarder=forwarder) as tracker:
        tracker.log_artifact(run.config)
        metrics = module.run(StageContext(cfg, run, tracker, parent, dist, name=label, stop=stop))
        tracker.log({names.final(k): v for k, v in metrics.items()}, step=0)
    result = {"stage": stage, "signature": run.signature, "metrics": metrics,
              "mlflow_run_id": tracker.run_id, "tags": tags, "code": code,
              "superseded": len(run.superseded())}  # times started over: what the workflow compares
    write_json_atomic(run.result(stage), result)
    return metrics


def code_record(stage: str, cfg: RunConfig, run: RunFolder) -> dict:
    """The code this run computes with, as its result file keeps it: the fingerprint of the
    package this process imported (a job's snapshot), its hash per module, and the git state
    (commit, dirty, a hash of the diff) of the tree the code came from: the snapshot's source
    named in the run folder's code.json, else the imported package's own tree."""
    code = methods.code_fingerprint(cfg.method, stage, package_root())
    snapshot = json.loads(run.code.read_text()) if run.code.exists() else {}
    git = snapshot.get("git") or git_state(Path(snapshot.get("source", package_root())))
    return {**code.to_json(), "git": git}
