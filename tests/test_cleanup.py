"""`harness.status --clean`: what no plan, table or live job asks for, listed with sizes and
deleted only when asked; kept runs, their pre-training, tabled runs and live jobs untouched."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def status(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "harness.status", "--directory", str(workdir), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def folder(results: Path, sig: str, files: dict[str, str]) -> Path:
    path = results / "runs" / sig
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_clean_lists_then_deletes_only_what_nothing_asks_for(tmp_path, monkeypatch):
    import mlflow

    from harness.workflow.plan import Plan

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    plan = Plan.from_snakemake_config({"scale": "tiny"}, ["table3"])
    table = plan.table_plan("table3")
    pretrain = next(sig for stage, sig in table.inputs() if stage == "pretrain")
    code = lambda h: json.dumps({"snapshot": h})  # noqa: E731
    folder(results, pretrain, {"pretrain.json": "{}", "code.json": code("aaaa"), "superseded-20261201/pretrain.json": "{}"})
    # a seed the current plan does not ask for, but a table plan names: kept
    seeded = Plan.from_snakemake_config({"scale": "tiny", "seeds": [1]}, ["table3"])
    seeded.table_plan("table3").write(results / "tables" / "table3.plan.json")
    tabled = next(sig for stage, sig in seeded.table_plan("table3").inputs() if stage == "linprobe")
    folder(results, tabled, {"linprobe.json": "{}", "code.json": code("aaaa"),
                             "config.yaml": "stage_config: {parent: null}\n"})
    # an abandoned config, logged to MLflow: listed, then deleted with its MLflow run
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("randsac-harness")).info.run_id
    orphan = folder(results, "0123456789ab", {"pretrain.json": "{}", "mlflow_run_id": run_id, "code.json": code("bbbb"),
                                              "checkpoint.pt": "x" * 5000})
    # an orphan whose job still runs: kept
    live = folder(results, "ba9876543210", {"job.json": json.dumps({"cluster": "local", "job_id": str(os.getpid())})})
    for h in ("aaaa", "bbbb", "cccc", "dddd"):
        (results / "code" / h / "harness").mkdir(parents=True)
        (results / "code" / h / "harness" / "x.py").write_text("x = 1\n")
        if h != "dddd":  # dddd: just taken by a launcher whose run folder does not name it yet
            os.utime(results / "code" / h, (0, 0))

    listed = status(tmp_path, "table3", "--clean", "--config", "scale=tiny").stdout
    lines = listed.splitlines()
    assert sorted(line.split()[2] for line in lines[:-1]) == ["code", "code", "run", "superseded"]
    assert "results/runs/0123456789ab " in listed and "superseded-20261201" in listed and "4.9 KB" in listed
    assert "results/code/bbbb " in listed and "results/code/cccc " in listed and "dddd" not in listed
    assert lines[-1].startswith("[harness] clean: 4 item(s), ") and lines[-1].endswith("delete them with --clean --delete")
    assert orphan.exists()  # listing deletes nothing

    status(tmp_path, "table3", "--clean", "--delete", "--config", "scale=tiny")
    assert not orphan.exists() and not (results / "runs" / pretrain / "superseded-20261201").exists()
    assert not (results / "code" / "bbbb").exists() and not (results / "code" / "cccc").exists()
    assert (results / "runs" / pretrain / "pretrain.json").exists() and (results / "runs" / tabled).exists()
    assert live.exists() and (results / "code" / "aaaa").exists() and (results / "code" / "dddd").exists()
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    again = status(tmp_path, "table3", "--clean", "--config", "scale=tiny").stdout
    assert again.splitlines() == ["[harness] clean: 0 item(s), 0 B no study, table or live job asks for"]
