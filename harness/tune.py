"""Hyper-parameter search with Optuna over any config field, at any scale.

    python -m harness.tune tuning/table3-lr.yaml [--scale tiny] [--executor '{"kind": "slurm", ...}']

A search names one cell of a study, the evaluation it optimizes (lin or ft), the search space
(dotted config fields) and how many trials and parallel workers. The objective is top-1 on a
validation split held out from the training set (`data.validation`), never the test split.
Workers are a submitit job array (local or Slurm) sharing one Optuna storage: a journal file
(safe on shared file systems) or an RDB URL. Every trial's stages are MLflow runs tagged with
the search and the trial. At the end the best parameters are written as a config override
(`results/tune/<name>/best.yaml`) that Snakemake takes with `--configfile`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core import metrics as names
from harness.core.config import RunConfig, deep_merge, dotted_to_nested
from harness.core.layout import Results, RunFolder
from harness.core.stages import BY_METRIC, PRETRAIN
from harness.run.executor import ExecutorConfig, make_executor
from harness.science import methods
from harness.plan.studies import ROOT, ConfigError, expand, load_study, validation_line
from harness.run.tracking import Store


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    study: str
    dataset: str
    setting: str
    scale: str = "smoke"
    objective: Literal[tuple(BY_METRIC)] = "lin"  # a table metric: the evaluation stage that reports it
    validation: float = Field(0.1, gt=0, lt=1)
    trials: int = Field(gt=0)
    workers: int = Field(1, gt=0)
    space: dict[str, Param] = Field(min_length=1)
    storage: str | None = None  # default: a journal file under results/tune/<name>/
    seed: int = 0

    def folder(self, results: Results) -> Path:
        return results.search(self.name)

    def storage_url(self, results: Results) -> str:
        return self.storage or str(self.folder(results) / "optuna.journal")


def load_search(path: Path, scale: str | None = None) -> Search:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.setdefault("name", Path(path).stem)
    if scale:
        raw["scale"] = scale
    try:
        search = Search(**raw)
    except ValidationError as err:
        raise ConfigError(f"search {path}: {validation_line(err)}") from None
    base_config(search, {})  # the cell exists and every field of the space is a real config field
    for field_path, p in search.space.items():
        probe = p.choices[0] if p.type == "categorical" else p.low
        base_config(search, dotted_to_nested({field_path: probe}))
    return search


def base_config(search: Search, params: dict) -> RunConfig:
    """The searched cell's config with `params` (nested) and the validation split applied."""
    cells = [c for c in expand(load_study(search.study), search.scale)
             if c.dataset == search.dataset and c.setting == search.setting]
    if not cells:
        raise ConfigError(f"search {search.name}: study {search.study} has no cell {search.dataset}: {search.setting}")
    raw = deep_merge(cells[0].config.model_dump(mode="json"),
                     deep_merge(params, {"data": {"validation": search.validation}, "seed": search.seed}))
    try:
        return methods.validate(raw)
    except ValidationError as err:
        raise ConfigError(f"search {search.name}: {validation_line(err)}") from None
    except ValueError as err:
        raise ConfigError(f"search {search.name}: {err}") from None


def storage(url: str):
    import optuna

    if "://" in url:  # an RDB URL, e.g. postgresql://... or sqlite:///...
        return url
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def suggest(trial, field_path: str, p: Param):
    if p.type == "float":
        return trial.suggest_float(field_path, p.low, p.high, log=p.log)
    if p.type == "int":
        return trial.suggest_int(field_path, int(p.low), int(p.high), log=p.log)
    return trial.suggest_categorical(field_path, p.choices)


def run_trial(search: Search, results: Results, tracking_uri: str | None, trial) -> float:
    """Pre-train and evaluate one trial in-process; every stage is an MLflow run."""
    from harness.run.runner import run_stage

    params = {path: suggest(trial, path, p) for path, p in search.space.items()}
    cfg = base_config(search, dotted_to_nested(params))
    trial_dir = search.folder(results) / f"trial-{trial.number:04d}"
    tags = {"tune": search.name, "trial": str(trial.number), "scale": search.scale,
            "study": search.study, "cell": f"{search.dataset}: {search.setting}"}
    store = Store.of(results, tracking_uri)
    eval_stage = BY_METRIC[search.objective].name
    # the method's own stages: a method without pre-training (supervised) evaluates from random init
    stages = [s for s in methods.method(cfg.method).stages if s in (PRETRAIN, eval_stage)]
    pretrained = RunFolder(trial_dir / PRETRAIN) if PRETRAIN in stages else None
    metrics: dict[str, float] = {}
    for stage in stages:
        parent = None if stage == PRETRAIN else pretrained
        run = RunFolder(trial_dir / stage)
        run.path.mkdir(parents=True, exist_ok=True)
        stage_tags = {**tags, "stage": stage, "signature": methods.signature(cfg, stage),
                      "mlflow.runName": f"{search.name}/trial-{trial.number}/{stage}"}
        metrics = run_stage(stage, cfg, run, store=store, tags=stage_tags, parent=parent)
    return metrics[names.acc1("val")]


def worker(search: Search, results: str, tracking_uri: str | None, worker_index: int, threads: int) -> int:
    """One worker of the job array: runs trials until the search has `trials` complete ones."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from harness.stages import engine

    engine.set_threads(threads)
    results_dir = Results(Path(results))
    study = optuna.load_study(study_name=search.name, storage=storage(search.storage_url(results_dir)),
                              sampler=optuna.samplers.TPESampler(seed=search.seed + worker_index))
    done = MaxTrialsCallback(search.trials, states=(TrialState.COMPLETE, TrialState.RUNNING))
    study.optimize(lambda trial: run_trial(search, results_dir, tracking_uri, trial), callbacks=[done],
                   n_trials=search.trials)
    return worker_index


def main(argv: list[str] | None = None) -> int:
    import optuna

    ap = argparse.ArgumentParser(prog="python -m harness.tune", description=__doc__.splitlines()[0])
    ap.add_argument("search", type=Path, help="a search file, e.g. tuning/table3-lr.yaml")
    ap.add_argument("--scale", default=None, help="override the search's scale")
    ap.add_argument("--executor", default='{"kind": "local", "cpus_per_task": 1}', help="executor settings as JSON")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else the results' sqlite store")
    args = ap.parse_args(argv)
    try:
        search = load_search(args.search, args.scale)
        executor_cfg = ExecutorConfig.model_validate_json(args.executor)
    except (ConfigError, ValidationError) as err:
        print(f"randsac-harness: error: {err}", file=sys.stderr)
        return 1
    results = Results(args.results.resolve())
    tracking_uri = Store.of(results, args.tracking_uri).uri  # one value, handed to every worker
    folder = search.folder(results)
    folder.mkdir(parents=True, exist_ok=True)
    optuna.create_study(study_name=search.name, storage=storage(search.storage_url(results)),
                        direction="maximize", load_if_exists=True)
    executor = make_executor(executor_cfg, folder / "submitit")
    executor.update_parameters(name=f"tune-{search.name}")
    n = search.workers
    jobs = executor.map_array(worker, [search] * n, [str(results.root)] * n, [tracking_uri] * n, list(range(n)),
                              [executor_cfg.cpus_per_task] * n)
    print(f"[harness] search {search.name}: {search.workers} workers, jobs {', '.join(j.job_id for j in jobs)}",
          flush=True)
    for job in jobs:
        job.result()
    study = optuna.load_study(study_name=search.name, storage=storage(search.storage_url(results)))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    override = dotted_to_nested(best.params)  # a nested config override: Snakemake's --configfile
    (folder / "best.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    summary = {"trials_complete": len(complete), "best_trial": best.number, "best_val_acc1": best.value,
               "best_params": best.params, "override": str(folder / "best.yaml")}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
