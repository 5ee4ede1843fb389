"""Optuna searches: validation split held out of training, parallel workers, best config written back."""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from harness.core.catalog import dataset_info
from harness.core.config import dotted_to_nested
from harness.science.transforms import eval_transform
from harness.stages.data import splits
from harness.plan.studies import ConfigError, expand, load_study
from harness.tune import base_config, load_search

ROOT = Path(__file__).resolve().parent.parent
SEARCH = {"study": "table3", "dataset": "cifar10", "setting": "square M=2", "scale": "tiny", "objective": "lin",
          "validation": 0.25, "trials": 4, "workers": 2,
          "space": {"pretrain.base_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "linprobe.base_lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}}


def test_validation_split_is_held_out_of_training_and_never_the_test_split():
    cfg = expand(load_study("table3"), "tiny", dotted_to_nested({"data.validation": 0.25,
                                                                 "data.train_subset": None,
                                                                 "data.test_subset": None}))[0].config
    info = dataset_info("mnist5k")
    train, val, name = splits(cfg, None, eval_transform(info, 32))
    assert name == "val" and len(val) == 1000 and len(train) == 3000  # 25% of the 4,000 training digits
    assert set(train.indices).isdisjoint(val.indices)
    assert val.dataset.train  # drawn from the training split, not the test split
    _, test, name = splits(expand(load_study("table3"), "tiny")[0].config, None, eval_transform(info, 32))
    assert name == "test" and not test.dataset.train
    assert splits(expand(load_study("table3"), "tiny")[0].config, None, None)[1] is None  # pre-training


def test_search_files_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SEARCH, "space": {"pretrain.base_lrr": {"type": "float", "low": 0, "high": 1}}}))
    with pytest.raises(ConfigError, match="base_lrr: Extra inputs are not permitted"):
        load_search(bad)
    bad.write_text(yaml.safe_dump({**SEARCH, "setting": "square M=3"}))
    with pytest.raises(ConfigError, match="no cell cifar10: square M=3"):
        load_search(bad)
    assert load_search(ROOT / "tuning" / "table3-lr.yaml").trials == 8


def run_search(tmp_path, executor: dict) -> dict:
    spec = tmp_path / "search.yaml"
    spec.write_text(yaml.safe_dump(SEARCH))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-m", "harness.tune", str(spec), "--results", str(tmp_path / "results"),
                          "--executor", json.dumps(executor)], capture_output=True, text=True, timeout=900,
                         cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads((tmp_path / "results" / "tune" / "search" / "summary.json").read_text())


def check_search(tmp_path, summary):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "results" / "tune" / "search" / "optuna.journal")))
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert len(trials) >= 4 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # every trial unique
    assert summary["trials_complete"] == len(trials)
    best = yaml.safe_load((tmp_path / "results" / "tune" / "search" / "best.yaml").read_text())
    assert set(best) == {"pretrain", "linprobe"} and best["pretrain"]["base_lr"] == summary["best_params"]["pretrain.base_lr"]
    # the override is a valid config for the cell; every trial stage is an MLflow run
    base_config(load_search(tmp_path / "search.yaml"), best)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 2 * len(trials) and all(r.data.tags["tune"] == "search" for r in runs)
    assert all("linprobe/final_val_acc1" in r.data.metrics for r in runs if r.data.tags["stage"] == "linprobe")


@pytest.mark.integration
def test_search_with_two_local_workers(tmp_path):
    check_search(tmp_path, run_search(tmp_path, {"kind": "local", "cpus_per_task": 1}))


@pytest.mark.integration
@pytest.mark.slurm
def test_optuna_search_with_two_slurm_workers(tmp_path, slurm):
    """A tiny search, 2 workers as a Slurm job array sharing a journal file: every trial complete, unique."""
    check_search(tmp_path, run_search(tmp_path, {"kind": "slurm", "partition": "cpu", "cpus_per_task": 1,
                                                 "mem_gb": 2, "timeout_min": 20}))
