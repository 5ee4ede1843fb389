"""A results/ made before signatures hashed differences from defaults keeps its finished runs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.core.layout import Results
from harness.core.stages import STAGES
from harness.migrate import legacy_signature, plan_moves
from harness.science import methods
from harness.plan.studies import load_study, plan
from harness.run.tracking import Store

# Table 3 at scale tiny as the code before the change left it (commit c97b998): every run's
# config.yaml and result file, in folders named by the old signatures (checkpoints left out), and
# the table's CSV, which names them
LEGACY = Path(__file__).parent / "legacy-results"

pytestmark = pytest.mark.integration


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(LEGACY, tmp_path / "results")
    results = Results(tmp_path / "results")
    for result in (results.root / "runs").glob("*/*.json"):  # as they were written: evaluations after pre-training
        os.utime(result, (1e9, 1e9) if result.name == "pretrain.json" else (1e9 + 60, 1e9 + 60))
    client = Store.of(results).client()  # each run's MLflow run, tagged as the old code tagged it
    exp = Store.of(results).experiment_id()
    for folder in sorted((results.root / "runs").iterdir()):
        stage = yaml.safe_load((folder / "config.yaml").read_text())["stage_config"]["stage"]
        run = client.create_run(exp, tags={"signature": folder.name, "stage": stage})
        (folder / "mlflow_run_id").write_text(run.info.run_id)
    return tmp_path, results


def test_the_fixture_is_the_old_table3(legacy):
    _, results = legacy
    folders = sorted((results.root / "runs").iterdir())
    assert len(folders) == 11  # 3 pre-trainings, 4 linear probes, 4 fine-tunings (the control's included)
    named = {s for sigs in pd.read_csv(results.table("table3", "csv"))["signatures"].dropna() for s in sigs.split()}
    assert named and named <= {f.name for f in folders}  # and its table, as the old code wrote it
    for folder in folders:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert legacy_signature(saved["stage_config"]) == folder.name


def test_migration_renames_every_finished_run_once_and_snakemake_redoes_none(legacy, snakemake, job_counts):
    workdir, results = legacy
    before = snakemake(workdir, "-n", "table3", "--config", "scale=tiny")
    assert before.returncode == 0, before.stderr[-2000:]
    stage_jobs = {k: v for k, v in job_counts(before.stdout).items() if k in STAGES}
    assert stage_jobs == {"pretrain": 3, "linprobe": 4, "finetune": 4}  # today's names: no old folder is found

    dry = subprocess.run([sys.executable, "-m", "harness.migrate", str(results.root)], capture_output=True, text=True)
    assert dry.returncode == 0 and "11 run folder(s) to rename: run again with --apply" in dry.stdout
    assert len(list((results.root / "runs").iterdir())) == 11 and not (results.root / "migrations.jsonl").exists()

    done = subprocess.run([sys.executable, "-m", "harness.migrate", str(results.root), "--apply"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = {r.signature: r for r in plan([load_study("table3")], "tiny").values()}
    assert {p.name for p in (results.root / "runs").iterdir()} == set(expected)
    client = Store.of(results).client()
    for sig, run in expected.items():
        folder = results.run(sig)
        saved = yaml.safe_load(folder.config.read_text())
        assert methods.signature(methods.validate(saved["config"]), run.stage) == sig
        result = json.loads(folder.result(run.stage).read_text())
        assert result["signature"] == sig and result["metrics"]
        assert folder.result(run.stage).stat().st_mtime == (1e9 if run.stage == "pretrain" else 1e9 + 60)
        tags = client.get_run(folder.mlflow_run_id.read_text().strip()).data.tags
        assert tags["signature"] == sig and tags.get("parent") == run.parent and tags["migrated_from"] != sig
    renamed = json.loads((results.root / "migrations.jsonl").read_text().splitlines()[-1])["renamed"]
    assert len(renamed) == 11 and set(renamed.values()) == set(expected)
    named = {s for sigs in pd.read_csv(results.table("table3", "csv"))["signatures"].dropna() for s in sigs.split()}
    assert named and named <= set(expected)  # the table's CSV names today's runs

    after = snakemake(workdir, "-n", "table3", "--config", "scale=tiny")
    assert after.returncode == 0, after.stderr[-2000:]
    counts = job_counts(after.stdout)
    assert not set(STAGES) & set(counts), counts  # finished runs are kept

    again = subprocess.run([sys.executable, "-m", "harness.migrate", str(results.root), "--apply"],
                           capture_output=True, text=True)
    assert "nothing to rename" in again.stdout and plan_moves(results) == ([], [])
