"""End to end through the real tools: Snakemake -> submitit (local executor) -> MLflow -> tables."""
import os
import re
import shutil

import mlflow
import pandas as pd
import pytest

from harness.run.tracking import EXPERIMENT

pytestmark = pytest.mark.integration  # every test runs Snakemake


def test_dry_run_lists_exactly_the_table3_jobs(tmp_path, snakemake, job_counts):
    out = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    assert job_counts(out.stdout) == {"pretrain": 3, "linprobe": 4, "finetune": 4, "table3_plan": 1,
                                      "table3": 1}  # + the control; the table's plan file, then the table
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    # a local stage job holds its threads in Snakemake's --cores count: the profile's 2 cores run
    # two 1-thread jobs at a time, or one 2-thread job
    assert "threads:" not in out.stdout
    two = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "executor={cpus_per_task: 2}")
    assert two.stdout.count("threads: 2") == 11, two.stdout


@pytest.mark.parametrize("args,message", [  # the rest of bad input: in process (core/test_config.py)
    (["table10", "--config", "scale=tiny", "segments={count: 65}"], "K=65 is larger than the 64 tokens"),
    (["table3", "--config", "scale=tiny", "segments={size: 2}"], "override segments.size sets what table3 varies"),
    (["table99", "--config", "scale=tiny"], "unknown target 'table99'; targets are all, table1"),
])
def test_bad_input_stops_before_any_job(tmp_path, snakemake, args, message):
    out = snakemake(tmp_path, *args)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_table3_end_to_end_at_tiny_scale(table3_tiny):
    workdir, out = table3_tiny
    tables = workdir / "results" / "tables"
    md = (tables / "table3.md").read_text()
    assert md.startswith("**Table 3.** Square-random serialization as a function of M (scale tiny")
    assert "Not comparable with the paper: scale `tiny`" in md and "mnist5k" in md
    assert "| LIN" in md and "| FT" in md and "81.38" in md  # the paper's number beside ours
    assert (tables / "table3.png").stat().st_size > 10_000 and (tables / "table3.pdf").exists()
    csv = pd.read_csv(tables / "table3.csv")
    assert list(csv["setting"].unique()) == ["square M=1", "square M=2", "square M=4", "random init"]
    assert (csv["n"] == 1).all() and csv["ours"].between(0, 100).all()
    assert set(csv["paper_dataset"]) == {"cifar10"} and set(csv["dataset"]) == {"mnist5k"}  # the column, what ran
    assert csv[csv.source == "this run"]["paper"].notna().all() and csv[csv.source == "control"]["paper"].isna().all()
    assert csv[csv.source == "this run"]["pretrain_ratio"].notna().all()
    # the paper's claims under it, one seed: each comparison's difference, and "needs seeds"
    assert "**Claims of Table 3 (scale tiny).**" in md and "[1] square M=2 > square M=1" in md
    claims = pd.read_csv(tables / "table3.claims.csv")
    assert len(claims) == 4 and set(claims["verdict"]) == {"needs seeds"} and (claims["n"] == 1).all()
    # every epoch printed a progress line, and the local jobs' lines reached Snakemake's console
    assert out.stdout.count("[M=2 · pretrain · s0 · table3] epoch ") == 2  # tiny: 2 epochs
    assert "ETA 0:00:00" in out.stdout and "img/s" in out.stdout
    # two jobs at a time; every pre-training starts before any evaluation (the stage rules' priority),
    # though the random-init control's evaluations were ready from the start
    started = re.findall(r"^localrule (pretrain|linprobe|finetune):", out.stdout + "\n" + out.stderr, re.M)
    assert sorted(started) == ["finetune"] * 4 + ["linprobe"] * 4 + ["pretrain"] * 3
    assert started[:3] == ["pretrain"] * 3, started
    # one warm server for the workflow's jobs (harness.run.warm): those after its first were its forks
    logs = list((workdir / "results" / ".warm").glob("*.log"))
    assert len(logs) == 1 and logs[0].read_text().count("-u -m submitit.core._submit") >= 1, logs

    # MLflow: one FINISHED run per stage run, named by what differs, tagged, nested, per-stage params
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("randsac-harness")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.info.run_name for r in runs}) == 11
    assert {"M=2 · pretrain · s0 · table3", "random init · finetune · s0 · table3"} <= {r.info.run_name for r in runs}
    by_sig = {(r.data.tags["signature"], r.data.tags["stage"]): r for r in runs}
    for r in runs:
        tags, stage = r.data.tags, r.data.tags["stage"]
        assert {"signature", "table", "cell", "stage", "seed", "dataset", "paper_dataset", "scale",
                "mlflow.source.git.commit", "mlflow.user", "mlflow.note.content"} <= set(tags)
        assert (tags["table"], tags["dataset"], tags["paper_dataset"], tags["seed"]) == ("table3", "mnist5k", "cifar10", "0")
        assert (workdir / "results" / "runs" / tags["signature"] / f"{stage}.json").exists()
        assert "parent" not in r.data.params and "stage" not in r.data.params
        assert f"{stage}.epochs" in r.data.params and not any(k.startswith("dino.") for k in r.data.params)
        history = client.get_metric_history(r.info.run_id, f"{stage}/loss")
        assert len(history) == int(r.data.params[f"{stage}.epochs"])
        assert not any(k.startswith("final_final") or "/" not in k for k in r.data.metrics)
        assert [d.dataset.name for d in r.inputs.dataset_inputs] == ["mnist5k"]
        assert any(k.startswith("system/") for k in r.data.metrics)
        if "parent" in tags:  # evaluation of a pre-trained encoder: nested under its pre-training run
            parent = by_sig[(tags["parent"], "pretrain")]
            assert tags["mlflow.parentRunId"] == parent.info.run_id
        elif stage == "pretrain":
            assert r.data.metrics["pretrain/final_loss_ratio"] == pytest.approx(
                r.data.metrics["pretrain/final_loss"] / r.data.metrics["pretrain/final_loss_floor"])
        else:
            assert tags["cell"] == "random init" and "mlflow.parentRunId" not in tags
    # the table's numbers are the MLflow runs' numbers
    finals = {r.data.tags["signature"]: r.data.metrics.get(f"{r.data.tags['stage']}/final_test_acc1") for r in runs}
    for row in csv.itertuples():
        assert row.ours == pytest.approx(finals[row.signatures])


def test_asking_again_redoes_nothing(tmp_path, snakemake, job_counts, table3_tiny):
    import shutil

    workdir, _ = table3_tiny
    shutil.copytree(workdir / "results", tmp_path / "results")  # the session's table3 stays untouched
    shutil.copytree(workdir / ".snakemake", tmp_path / ".snakemake", ignore=shutil.ignore_patterns("locks"))
    # asking again does nothing: every run is one signature, already done
    again = snakemake(tmp_path, "table3", "--config", "scale=tiny")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # ... whatever executor settings or MLflow tags the asking invocation brings
    again = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "executor={mem_gb: 3}")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # ... or runtime settings, which no signature hashes (Snakemake compares the signature, not
    # the whole config, so a field added to a section a run does not read redoes no run either)
    # and no table shows (its plan file is written again only when its content changes)
    again = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "data={num_workers: 1}", "compile=true")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
    # a change of what the table shows (its control left out) writes its plan and the table again, no run
    again = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "controls=false")
    assert again.returncode == 0 and job_counts(again.stdout) == {"table3_plan": 1, "table3": 1}, again.stdout[-3000:]
    # another table sharing two of its cells (square M=1 = patch-random, M=2 = square-random) and
    # its control plans only its new cell: Snakemake does not redo runs another table asked for
    table4 = snakemake(tmp_path, "-n", "table4", "--config", "scale=tiny")
    assert table4.returncode == 0, table4.stderr
    assert job_counts(table4.stdout) == {"pretrain": 1, "linprobe": 1, "finetune": 1, "table4_plan": 1, "table4": 1}


def test_the_claims_target_renders_from_finished_runs_with_no_tracking_store(tmp_path, snakemake, table3_tiny):
    import shutil
    import socket

    workdir, _ = table3_tiny
    shutil.copytree(workdir / "results", tmp_path / "results", ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    with socket.socket() as s:  # a port nothing listens on: no tracking server either
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = snakemake(tmp_path, "claims", "--config", "scale=tiny", f"tracking_uri={nowhere}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    md = (tmp_path / "results" / "claims.md").read_text()
    assert md.startswith("# The paper's claims, checked\n\n**at tiny, 1 seed: 0 hold, 0 reversed, 0 unresolved, "
                         "4 need seeds (one seed) of 4.**")
    assert "Table 3 (scale tiny)" in md and (tmp_path / "results" / "claims.png").stat().st_size > 10_000
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_dry_run_all_plans_every_table_and_shares_runs(tmp_path, snakemake, job_counts):
    from harness.plan.studies import available_studies, load_study, plan

    out = snakemake(tmp_path, "-n", "all", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    counts = job_counts(out.stdout)
    runs = plan([load_study(n) for n in available_studies()], "tiny")
    for stage in ("pretrain", "linprobe", "finetune"):
        assert counts[stage] == sum(r.stage == stage for r in runs.values())
    assert all(counts[f"table{i}"] == 1 for i in range(1, 11)) and counts["all"] == 1


@pytest.mark.long  # 88 stage runs: 25 min on this 2-core VM (docs/findings.md); each table's stage runs
# take their steps at paper scale in tests/run/test_preflight.py, Table 3 runs end to end above
def test_all_tables_end_to_end_at_tiny_scale(tmp_path, monkeypatch, snakemake, job_counts, table3_tiny):
    """Every table of the paper, generated through Snakemake, submitit's local executor and MLflow,
    in a copy of the session's Table 3 working folder: the runs Table 3 made are not made again
    (other executor settings redo no run), the other tables' are."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(table3_tiny[0], tmp_path, symlinks=True, dirs_exist_ok=True)
    out = snakemake(tmp_path, "all", "--config", "scale=tiny", "executor={cpus_per_task: 1}", "--jobs", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from harness.plan.studies import available_studies, load_study, plan

    every, made = plan([load_study(n) for n in available_studies()], "tiny"), plan([load_study("table3")], "tiny")
    counts = job_counts(out.stdout + out.stderr)  # the plan Snakemake printed before running it
    assert sum(counts.get(stage, 0) for stage in ("pretrain", "linprobe", "finetune")) == len(every) - len(made)
    tables = tmp_path / "results" / "tables"
    for i in range(1, 11):
        md = (tables / f"table{i}.md").read_text()
        assert md.startswith(f"**Table {i}.**") and "Not comparable with the paper: scale `tiny`" in md
        long = pd.read_csv(tables / f"table{i}.csv")
        ran = long[long["source"] == "this run"]
        assert len(ran) and (ran["n"] == ran["seeds"]).all(), f"table{i} has missing cells"
        assert ran["ours"].between(0, 100).all()
    t7 = pd.read_csv(tables / "table7.csv")
    assert set(t7["setting"]) == {"Supervised", "DINO", "MAE (75% mask)", "RandSAC-Square 16->4", "RandSAC-Blob 11->5",
                                  "random init"}
    sup = t7[(t7.setting == "Supervised") & (t7.metric == "FT")].iloc[0]
    control = t7[(t7.setting == "random init") & (t7.metric == "FT")].iloc[0]
    assert sup.signatures == control.signatures and sup.ours == control.ours  # one run: the supervised baseline
    assert "(reported)" in (tables / "table8.md").read_text()
    import mlflow

    from harness.core.layout import Results
    from harness.run.tracking import Store

    store = Store.of(Results(tmp_path / "results"))
    client = mlflow.MlflowClient(store.uri)
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}
    pretrains = [r for r in runs if r.data.tags["stage"] == "pretrain" and r.data.params["method"] == "randsac"]
    assert all((store.artifact_dir(r.info.artifact_uri) / "reconstruction.png").exists() for r in pretrains)


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
    def results():
        return [p for p in runs_dir.glob("*/*.json") if p.stem in ("pretrain", "linprobe", "finetune")]

    def stage_jobs_finished() -> int:
        """Stage jobs Snakemake has logged as finished: a run's result file is written before its
        job ends, and two jobs at a time can both hold theirs when stopped (and lose them)."""
        logs = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
        return sum(len(re.findall(r"Finished jobid: \d+ \(Rule: (?:pretrain|linprobe|finetune)\)", log.read_text()))
                   for log in logs)

    while stage_jobs_finished() < 2:  # two stage runs finished
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    # Snakemake removes the outputs of jobs it was running when stopped; what is left finished
    finished = {p.parent.name: p.stem for p in results()}
    assert 1 <= len(finished) < 11
    dry = snakemake(tmp_path, "-n", *args)
    counts = job_counts(dry.stdout)
    assert sum(counts.get(s, 0) for s in ("pretrain", "linprobe", "finetune")) == 11 - len(finished)
    again = snakemake(tmp_path, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}  # no duplicate, none lost
    for r in runs:
        stage = r.data.tags["stage"]
        if r.data.tags["signature"] in finished:  # finished before the stop: never retrained
            assert not client.get_metric_history(r.info.run_id, f"{stage}/resumed_at_epoch")
            assert len(client.get_metric_history(r.info.run_id, f"{stage}/loss")) == int(r.data.params[f"{stage}.epochs"])


def test_nan_loss_fails_the_job_and_its_mlflow_run(tmp_path, monkeypatch, snakemake):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = snakemake(tmp_path, "table3", "--cores", "1", "--config", "scale=tiny", "controls=false",  # one job at a time
                    "pretrain={base_lr: 1e30, warmup_epochs: 0}")
    assert out.returncode != 0
    logs = out.stdout + out.stderr
    assert "FAILED" in logs
    # the launcher's reason is the last thing the failed stage says, and nothing buries it: the
    # command Snakemake prints (twice) names the job file, it does not spell out the config
    lines = logs.splitlines()
    failed = next(i for i, line in enumerate(lines) if " FAILED: " in line)
    assert "NonFiniteLoss" in lines[failed] and lines[failed + 1].startswith("[harness] logs: ")
    stage = lines[failed].split(" FAILED: ")[0]  # "[harness] pretrain <signature>"
    assert not [line for line in lines[failed + 1:] if line.startswith(stage)]
    commands = [line for line in lines if "-m harness.run.launch" in line]
    assert commands and all("--job results/.launch/pretrain-" in c and len(c) < 400 for c in commands), commands
    assert '{"method"' not in logs and max(map(len, lines)) < 500
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert runs and all(r.info.status == "FAILED" for r in runs)  # the first stage fails, nothing runs after
    (failed,) = (tmp_path / "results" / "runs").iterdir()
    assert not (failed / "pretrain.json").exists()
    err = next((failed / "submitit").glob("*/*_log.err")).read_text()
    assert "NonFiniteLoss" in err and "loss is" in err


def test_a_store_that_does_not_answer_delays_no_run(tmp_path, snakemake):
    """The workflow starts at once and says so in one line; the run trains, writes its result
    and keeps what it logged in its spool, which harness.status marks."""
    import socket

    from harness.core.layout import RunFolder
    from harness.run.spool import Spool
    from harness.workflow.plan import Plan

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    plan = Plan("tiny", {}, {"pretrain": {"epochs": 1}}, only=["table3"])
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain")
    target = f"results/runs/{sig}/pretrain.json"
    out = snakemake(tmp_path, target, "--config", "scale=tiny", "pretrain={epochs: 1}", f"tracking_uri={nowhere}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert said.count(f"tracking store {nowhere} does not answer") == 2  # the workflow's line, the stage's line
    run = RunFolder(tmp_path / "results" / "runs" / sig)
    assert run.result("pretrain").exists() and Spool(run, "pretrain").waiting() > 0
