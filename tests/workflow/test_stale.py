"""Stale runs end to end: the session's Table 3 at scale tiny (its working folder copied) asked
again from a copy of the repository whose loss is then edited (the tests never edit this
repository's harness). Status, the table and Snakemake's plan see exactly RandSAC's runs as
stale, never the random-init control's; a comment-only edit marks nothing; `rerun=stale` plans
exactly the stale runs, keeps their old results and MLflow runs, and afterwards nothing is stale
or planned. The copy's Table 3 keeps one of its three RandSAC cells (M=1; its runs are those of
the full table): what is checked holds per run, and the rerun then costs three runs, not nine."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = ("pretrain", "linprobe", "finetune")
SQUARED, ABSOLUTE = "(pred - target).pow(2)", "(pred - target).abs()"  # RandSAC's loss, and an edit of it
CONFIG = ["scale=tiny"]  # the session's Table 3 (conftest.table3_tiny)


def copy_repository(tmp_path: Path) -> Path:
    """What a user's checkout holds to run a table: the package, the studies, the profiles, the
    Snakefile (and the profiles' links)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "harness", repo / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("studies", "profiles"):
        shutil.copytree(ROOT / folder, repo / folder)
    shutil.copy(ROOT / "Snakefile", repo / "Snakefile")
    for profile in ("local", "slurm"):
        (repo / profile).symlink_to(f"profiles/{profile}")
    study = repo / "studies" / "table3.yaml"
    raw = yaml.safe_load(study.read_text())
    assert raw["factors"]["M"]["values"] == [1, 2, 4]
    raw["factors"]["M"]["values"] = [1]  # square M=1 and the control
    raw["paper"]["cifar10"] = {"square M=1": raw["paper"]["cifar10"]["square M=1"]}  # the paper's number of that cell
    raw["claims"] = []  # they compare M=2 with the others: no such cell here
    study.write_text(yaml.safe_dump(raw, sort_keys=False))
    return repo


def env_of(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(repo)  # the copy's package before the installed one, in every process
    return env


def snakemake(repo: Path, workdir: Path, *args: str, rerun: bool = False) -> subprocess.CompletedProcess:
    config = [*CONFIG, "rerun=stale"] if rerun else CONFIG
    out = subprocess.run([SNAKEMAKE, "--profile", "local", "--directory", str(workdir), "table3", *args,
                          "--config", *config], cwd=repo, env=env_of(repo), capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def status(repo: Path, workdir: Path) -> dict[str, tuple[str, str]]:
    """run name (setting · stage) -> (state, detail), from the copy's `python -m harness.status`."""
    out = subprocess.run([sys.executable, "-m", "harness.status", "table3", "--directory", str(workdir),
                          "--config", *CONFIG], cwd=repo, env=env_of(repo), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    found = (re.match(r"^(not started|\w+)\s+table3 · (.+?) · s\d+ · (\w+)\s", line) for line in out.stdout.splitlines())
    return {f"{m.group(2)} · {m.group(3)}": (m.group(1), m.string) for m in found if m}


def test_a_loss_edit_makes_randsac_runs_stale_not_the_control_and_rerun_stale_redoes_exactly_them(
        tmp_path, job_counts, table3_tiny):
    def stage_jobs(out: subprocess.CompletedProcess) -> dict[str, int]:
        logs = out.stdout + out.stderr  # a dry run prints its plan on stdout, a run on stderr
        counts = job_counts(logs) if "Job stats:" in logs else {}
        return {rule: n for rule, n in counts.items() if rule in STAGES}

    repo, workdir = copy_repository(tmp_path), tmp_path / "work"
    shutil.copytree(table3_tiny[0], workdir, symlinks=True)  # its runs, MLflow store and Snakemake's records
    assert stage_jobs(snakemake(repo, workdir)) == {}  # the same code: nothing to redo, the table drawn anew
    runs = workdir / "results" / "runs"
    result = json.loads(next(runs.glob("*/pretrain.json")).read_text())
    assert result["code"]["fingerprint"] and "harness.science.pixel_loss" in result["code"]["modules"]
    assert {state for state, _ in status(repo, workdir).values()} == {"done"}

    loss = repo / "harness" / "science" / "pixel_loss.py"
    text = loss.read_text()
    loss.write_text("# reworded, commented: the same code\n" + text.replace('"""Pixels as', '"""Reworded: pixels as'))
    assert {state for state, _ in status(repo, workdir).values()} == {"done"}
    assert stage_jobs(snakemake(repo, workdir, "-n")) == {}

    loss.write_text(text.replace(SQUARED, ABSOLUTE))
    states = status(repo, workdir)
    randsac = {name: st for name, st in states.items() if not name.startswith("random init")}
    control = {name: st for name, st in states.items() if name.startswith("random init")}
    assert len(randsac) == 3 and len(control) == 2
    assert {state for state, _ in randsac.values()} == {"stale"}
    assert {state for state, _ in control.values()} == {"done"}
    for name, (_, line) in randsac.items():
        if name.endswith("pretrain"):
            assert "code changed since: harness.science.pixel_loss" in line
        else:
            assert "its pre-training run" in line and "is stale (harness.science.pixel_loss)" in line
    assert stage_jobs(snakemake(repo, workdir, "-n")) == {}  # nothing reruns by itself

    out = snakemake(repo, workdir)  # the plan's digest changed with the code: the table is drawn again
    assert stage_jobs(out) == {}
    tables = workdir / "results" / "tables"
    md = (tables / "table3.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| LIN") or line.startswith("| FT")]
    assert len(rows) == 2 and all(row.count("§") == 1 for row in rows)  # M=1; not random init
    assert "§ stale: built from runs made by other code than today's (harness.science.pixel_loss changed" in md
    csv = pd.read_csv(tables / "table3.csv", keep_default_na=False)
    assert set(csv[csv.source == "this run"]["stale"]) == {"harness.science.pixel_loss"}
    assert set(csv[csv.source == "control"]["stale"]) == {""}
    assert r"\textsuperscript{\S}" in (tables / "table3.tex").read_text()

    planned = snakemake(repo, workdir, "-n", rerun=True)
    assert stage_jobs(planned) == {"pretrain": 1, "linprobe": 1, "finetune": 1}
    assert not list(runs.glob("*/superseded-*"))  # a dry run moves nothing

    old_ids = {p.parent.name: p.read_text().strip() for p in runs.glob("*/mlflow_run_id")}
    snakemake(repo, workdir, rerun=True)
    kept = sorted(runs.glob("*/superseded-*"))
    assert len(kept) == 3 and all(len(list(k.glob("*.json"))) >= 1 for k in kept)
    assert {state for state, _ in status(repo, workdir).values()} == {"done"}
    assert stage_jobs(snakemake(repo, workdir, "-n")) == {}  # and the next call plans nothing
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    for folder in kept:
        old = old_ids[folder.parent.name]
        assert (folder / "mlflow_run_id").read_text().strip() == old
        assert "started over with newer code" in client.get_run(old).data.tags["superseded"]
        assert (folder.parent / "mlflow_run_id").read_text().strip() != old  # a new MLflow run
        for stage in STAGES:  # the new result, made by the copy, which is not a git tree
            if (folder.parent / f"{stage}.json").exists():
                assert json.loads((folder.parent / f"{stage}.json").read_text())["code"]["git"]["commit"] == "unknown"
    assert "§" not in (tables / "table3.md").read_text()
