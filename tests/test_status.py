"""The status command on a running table."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def status(workdir: Path, *config: str) -> str:
    out = subprocess.run([sys.executable, "-m", "harness.status", "table3", "--directory", str(workdir),
                          "--config", *config], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.integration
def test_status_of_a_running_table(tmp_path, start_snakemake, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ["scale=tiny", "pretrain={epochs: 6}", "data={train_subset: 1024}", "controls=false"]
    before = status(tmp_path, *config)
    assert before.count("not started") == 9 + 1  # every run, and the summary line
    proc = start_snakemake(tmp_path, "table3", "--cores", "1", "--config", *config)  # one job at a time
    try:
        deadline = time.time() + 600
        while not list((tmp_path / "results" / "runs").glob("*/progress.json")):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.5)
        during = status(tmp_path, *config)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    running = [line for line in during.splitlines() if line.startswith("running")]
    assert len(running) == 1 and "local job" in running[0] and "/6," in running[0] and "ETA" in running[0]
    assert during.count("not started") == 8 + 1
    deadline = time.time() + 120  # the workflow was stopped: its job stops after its current step
    while "running" in (after := status(tmp_path, *config)).split("[harness]")[0]:
        assert time.time() < deadline, after
        time.sleep(1)
    assert "stopped" in after
    stopped = [p.parent for p in (tmp_path / "results" / "runs").glob("*/progress.json")]
    assert len(stopped) == 1 and (stopped[0] / "checkpoint.pt").exists()  # it kept its step


def run_status(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.status", "--directory", str(workdir), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def finish(workdir: Path, table: str, stages=("pretrain", "linprobe", "finetune"), **config) -> list[str]:
    """Result files, as the runner writes them, for the runs of `table` at tiny in the given stages."""
    import json

    from harness.workflow.plan import Plan

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        plan = Plan.from_snakemake_config({"scale": "tiny", **config}, [table])
        inputs = plan.table_plan(table).inputs()
    finally:
        os.chdir(cwd)
    done = []
    for stage, sig in inputs:
        if stage in stages:
            folder = workdir / "results" / "runs" / sig
            folder.mkdir(parents=True, exist_ok=True)
            metrics = {"loss_ratio": 0.5} if stage == "pretrain" else {"test_acc1": 50.0}
            (folder / f"{stage}.json").write_text(json.dumps({"stage": stage, "metrics": metrics}))
            done.append(sig)
    return done


def test_the_list_of_tables_comes_from_the_studies(tmp_path):
    out = run_status(tmp_path, "--list", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:11]] == [f"table{n}" for n in range(1, 11)]
    assert lines[3].split()[:3] == ["table3", "3", "11"] and "M: M=1, M=2, M=4" in lines[3]  # 3 cells, 11 runs
    help_text = run_status(tmp_path, "--help").stdout
    assert "table1, table2" in help_text and "table10" in help_text  # the targets, from studies/


def test_show_prints_a_cells_resolved_config_and_signatures_without_launching(tmp_path):
    import yaml

    from harness.plan.studies import expand, load_study

    out = run_status(tmp_path, "--show", "table3:M=2", "--config", "scale=tiny", "pretrain={epochs: 3}")
    assert out.returncode == 0, out.stderr
    (cell,) = [c for c in expand(load_study("table3"), "tiny", {"pretrain": {"epochs": 3}}) if c.short == "M=2"]
    assert out.stdout.startswith("# table3 · cifar10: square M=2 · seed 0 (scale tiny)")
    for stage in ("pretrain", "linprobe", "finetune"):
        assert f"#   {stage:<9} {cell.signature(stage)}  not started" in out.stdout
    config = yaml.safe_load(out.stdout)
    assert config["segments"]["size"] == 2 and config["pretrain"]["epochs"] == 3
    assert not (tmp_path / "results").exists()  # nothing launched, nothing written
    wrong = run_status(tmp_path, "--show", "table3:M=3", "--config", "scale=tiny")
    assert wrong.returncode == 1 and wrong.stderr.strip() == (
        "randsac-harness: error: --show 'table3:M=3': table3 has no cell 'M=3'; its settings are "
        "square M=1, square M=2, square M=4")


def test_status_filters_failed_and_stale_runs_and_speaks_json(tmp_path):
    import json

    done = finish(tmp_path, "table3", stages=("pretrain",))
    everything = json.loads(run_status(tmp_path, "table3", "--json", "--config", "scale=tiny").stdout)
    assert len(everything) == 11 and {r["state"] for r in everything} == {"done", "not started"}
    assert sorted(r["signature"] for r in everything if r["state"] == "done") == sorted(done)
    assert {"signature", "stage", "table", "setting", "dataset", "seed", "state", "detail"} <= set(everything[0])
    # one run's job ended without a result: it is the one --failed shows (stopped or failed)
    stopped = next(r for r in everything if r["stage"] == "linprobe")
    folder = tmp_path / "results" / "runs" / stopped["signature"]
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"cluster": "local", "job_id": "999999999"}))
    failed = json.loads(run_status(tmp_path, "table3", "--failed", "--json", "--config", "scale=tiny").stdout)
    assert [(r["signature"], r["state"]) for r in failed] == [(stopped["signature"], "stopped")]
    text = run_status(tmp_path, "table3", "--failed", "--stale", "--config", "scale=tiny").stdout
    assert text.splitlines()[0].startswith("stopped ") and "(shown: 1 failed or stale or stopped)" in text


def test_a_partial_table_marks_what_has_not_run(tmp_path):
    finish(tmp_path, "table3", stages=("pretrain", "linprobe"))
    out = run_status(tmp_path, "table3", "--table", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "results" / "tables" / "partial" / "table3.md").read_text()
    assert "| LIN | 50.0 " in md and "| FT  | …  " in md
    assert "Partial table: 7 of 11 runs done; … a cell whose runs have not finished, — a cell that does not apply." in md
    assert not (tmp_path / "results" / "tables" / "table3.md").exists()  # the workflow's table is left alone


def test_status_marks_spooled_tracking_and_replay_needs_the_store(tmp_path):
    """A run whose tracking the store does not hold yet is marked; --replay against a store that
    does not answer is one line and changes nothing."""
    import socket

    from harness.core.layout import RunFolder
    from harness.run.spool import Spool

    sig = finish(tmp_path, "table3", stages=("pretrain",))[0]
    spool = Spool(RunFolder(tmp_path / "results" / "runs" / sig), "pretrain")
    spool.append("open", tags={}, params={}, parent=None, ts=0)
    spool.append("metrics", step=0, ts=0, values={"pretrain/loss": 1.0})
    out = run_status(tmp_path, "table3", "--config", "scale=tiny")
    assert out.returncode == 0, out.stderr
    marked = [line for line in out.stdout.splitlines() if sig in line]
    assert len(marked) == 1 and "tracking: 2 events spooled" in marked[0]
    assert "1 runs have tracking the store does not hold yet" in out.stdout and "--replay" in out.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    replay = run_status(tmp_path, "--replay", "--config", "scale=tiny", f"tracking_uri={nowhere}")
    assert replay.returncode == 1 and replay.stderr.count("\n") == 1 and "does not answer" in replay.stderr
    assert spool.waiting() == 2
