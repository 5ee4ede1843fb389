"""End to end through the real tools: Snakemake -> submitit (local executor) -> MLflow -> tables."""
import os

import pandas as pd
import pytest


def test_dry_run_lists_exactly_the_table3_jobs(tmp_path, snakemake, job_counts):
    out = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    assert job_counts(out.stdout) == {"pretrain": 3, "linprobe": 3, "finetune": 3, "table3": 1}
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


@pytest.mark.parametrize("args,message", [  # the rest of bad input is tested in process (test_config)
    (["table3", "--config", "scale=tiny", "segments={size: 3}"], "M=3 does not divide the 8x8 token grid"),
    (["table99", "--config", "scale=tiny"], "unknown target 'table99'; targets are all, table1"),
])
def test_bad_input_stops_before_any_job(tmp_path, snakemake, args, message):
    out = snakemake(tmp_path, *args)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.integration
def test_table3_end_to_end_at_tiny_scale(tmp_path, monkeypatch, snakemake, job_counts):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    md = (tables / "table3.md").read_text()
    assert "Not comparable with the paper: scale `tiny`" in md and "mnist5k" in md
    assert "| LIN" in md and "| FT" in md and "81.38" in md  # the paper's number beside ours
    tex = (tables / "table3.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\caption" in tex
    csv = pd.read_csv(tables / "table3.csv")
    assert list(csv["setting"].unique()) == ["square M=1", "square M=2", "square M=4"] and (csv["n"] == 1).all()
    assert csv["ours"].between(0, 100).all() and csv["paper"].notna().all()

    # MLflow: one FINISHED run per stage run, tagged and with per-epoch metrics
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("randsac-harness")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["stage"] for r in runs) == ["finetune"] * 3 + ["linprobe"] * 3 + ["pretrain"] * 3
    for r in runs:
        tags = r.data.tags
        assert {"signature", "study", "cell", "stage", "scale", "git_commit"} <= set(tags)
        assert tags["study"] == "table3" and tags["scale"] == "tiny"
        assert (tmp_path / "results" / "runs" / tags["signature"] / f"{tags['stage']}.json").exists()
        assert r.data.params["segments.size"] in {"1", "2", "4"}
        history = client.get_metric_history(r.info.run_id, "loss")
        assert len(history) == int(r.data.params[f"{tags['stage']}.epochs"])
    # the table's numbers are the MLflow runs' numbers
    finals = {r.data.tags["signature"]: r.data.metrics.get("final_test_acc1") for r in runs}
    for row in csv.itertuples():
        assert row.ours == pytest.approx(finals[row.signatures])

    # asking again does nothing: every run is one signature, already done
    again = snakemake(tmp_path, "table3", "--config", "scale=tiny")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # ... whatever executor settings or MLflow tags the asking invocation brings
    again = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "executor={mem_gb: 3}")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # another table sharing two of its cells (square M=1 = patch-random, M=2 = square-random)
    # plans only its new cell: Snakemake does not redo runs another table asked for
    table4 = snakemake(tmp_path, "-n", "table4", "--config", "scale=tiny")
    assert table4.returncode == 0, table4.stderr
    assert job_counts(table4.stdout) == {"pretrain": 1, "linprobe": 1, "finetune": 1, "table4": 1}


def test_dry_run_all_plans_every_table_and_shares_runs(tmp_path, snakemake, job_counts):
    from harness.studies import available_studies, load_study, plan

    out = snakemake(tmp_path, "-n", "all", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    counts = job_counts(out.stdout)
    runs = plan([load_study(n) for n in available_studies()], "tiny")
    for stage in ("pretrain", "linprobe", "finetune"):
        assert counts[stage] == sum(r.stage == stage for r in runs.values())
    assert all(counts[f"table{i}"] == 1 for i in range(1, 11)) and counts["all"] == 1


@pytest.mark.integration
def test_all_tables_end_to_end_at_tiny_scale(tmp_path, monkeypatch, snakemake):
    """Every table of the paper, generated through Snakemake, submitit's local executor and MLflow."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = snakemake(tmp_path, "all", "--config", "scale=tiny", "executor={cpus_per_task: 1}", "--jobs", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    for i in range(1, 11):
        md = (tables / f"table{i}.md").read_text()
        assert md.startswith(f"Table {i}:") and "Not comparable with the paper: scale `tiny`" in md
        long = pd.read_csv(tables / f"table{i}.csv")
        ran = long[long["source"] == "this run"]
        assert len(ran) and (ran["n"] == ran["seeds"]).all(), f"table{i} has missing cells"
        assert ran["ours"].between(0, 100).all()
    t7 = pd.read_csv(tables / "table7.csv")
    assert set(t7["setting"]) == {"Supervised", "DINO", "MAE (75% mask)", "RandSAC-Square 16->4", "RandSAC-Blob 11->5"}
    assert "(reported)" in (tables / "table8.md").read_text()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}
    pretrains = [r for r in runs if r.data.tags["stage"] == "pretrain" and r.data.params["method"] == "randsac"]
    artifacts = {a.path for r in pretrains[:3] for a in client.list_artifacts(r.info.run_id)}
    assert "reconstruction.png" in artifacts


@pytest.mark.integration
def test_a_stopped_workflow_redoes_only_unfinished_runs(tmp_path, monkeypatch, snakemake, start_snakemake,
                                                       job_counts):
    """Stop Snakemake mid-table; asking again runs only what had not finished, and every run
    keeps one MLflow run (a stage cut short continues its own run)."""
    import signal
    import time

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["table3", "--config", "scale=tiny", "pretrain={epochs: 4}"]
    proc = start_snakemake(tmp_path, *args)
    runs_dir = tmp_path / "results" / "runs"
    deadline = time.time() + 600
    while len(list(runs_dir.glob("*/*[!b].json"))) < 2:  # two stage runs finished (job.json excluded)
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    # Snakemake removes the outputs of jobs it was running when stopped; what is left finished
    finished = {p.parent.name: p.stem for p in runs_dir.glob("*/*[!b].json")}
    assert 1 <= len(finished) < 9
    dry = snakemake(tmp_path, "-n", *args)
    counts = job_counts(dry.stdout)
    assert sum(counts.get(s, 0) for s in ("pretrain", "linprobe", "finetune")) == 9 - len(finished)
    again = snakemake(tmp_path, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}  # no duplicate, none lost
    for r in runs:
        if r.data.tags["signature"] in finished:  # finished before the stop: never retrained
            assert not client.get_metric_history(r.info.run_id, "resumed_at_epoch")
            assert len(client.get_metric_history(r.info.run_id, "loss")) == int(
                r.data.params[f"{r.data.tags['stage']}.epochs"])
