"""Tables from the declared outputs: the table step reads its plan file and the result files of
the runs its rule declares, never the tracking store nor the study again."""
import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.core.layout import Results
from harness.plan.studies import expand, load_study
from harness.plan.table_plan import TablePlan
from harness.workflow.plan import Plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Where Snakemake would run: results/ relative to it, no tracking store anywhere."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan_for(target: str, **config) -> Plan:
    return Plan.from_snakemake_config({"scale": "tiny", **config}, [target])


def write_results(plan: Plan, study, value=lambda stage, i: 40.0 + i, ratio=0.5) -> dict[str, float]:
    """A result file, as harness.run.runner writes it, for every run the table reads: signature -> number."""
    numbers = {}
    for i, (stage, sig) in enumerate(plan.table_plan(study).inputs()):
        folder = plan.results.run(sig)
        folder.path.mkdir(parents=True, exist_ok=True)
        if stage == "pretrain":
            metrics = {"loss": 2.0 * ratio, "loss_floor": 2.0, "loss_ratio": ratio}
        else:
            numbers[sig] = value(stage, i)
            metrics = {"test_acc1": numbers[sig], "best_test_acc1": numbers[sig] + 1}
        folder.result(stage).write_text(json.dumps({"stage": stage, "signature": sig, "metrics": metrics,
                                                    "mlflow_run_id": "not-a-run", "tags": {}}))
    return numbers


def test_the_plan_holds_every_cell_with_its_runs_and_its_controls(workdir):
    plan = plan_for("table3")
    study = plan.studies[0]
    table = plan.table_plan(study)
    cells = expand(load_study("table3"), "tiny")
    assert [(c.dataset, c.setting, c.short, c.seed, c.control) for c in table.cells] == \
        [(c.dataset, c.setting, c.short, c.seed, c.control) for c in cells]
    (control,) = [c for c in cells if c.control]
    for planned, cell in zip(table.cells, cells):
        assert planned.runs == {s: cell.signature(s) for s in cell.stages(study.metrics)}
        assert planned.config.data.name == "mnist5k" and planned.config.pretrain.epochs == cell.config.pretrain.epochs
        assert planned.control_runs == ({} if cell.control else
                                        {s: control.signature(s) for s in ("linprobe", "finetune")})
    assert (table.study.caption, table.study.rows, table.scale, table.results) == (study.caption, "metric", "tiny", "results")
    assert table.study.paper["cifar10"]["square M=2"] == {"lin": 81.38, "ft": 91.38}
    # the table rule's inputs: every one of those runs' result files, pre-training included (†),
    # each a run the stage rules make
    inputs = plan.table_inputs(study)
    assert len(inputs) == len(set(inputs)) == 11 == len(plan.runs)
    assert {str(plan.results.run(r.signature).result(r.stage)) for r in plan.runs.values()} == set(inputs)
    # written and read back as it was
    path = Path(plan.table_plan_file(study))
    assert path == Path("results/tables/table3.plan.json")
    plan.write_table_plan("table3", path)
    assert TablePlan.read(path) == table and TablePlan.read(path).digest() == plan.table_plan_digest(study)


def test_the_plan_changes_only_with_what_the_table_shows(workdir):
    def digest(target="table3", **config):
        plan = plan_for(target, **config)
        return plan.table_plan_digest(next(s for s in plan.studies if s.name == "table3"))

    same = digest()
    assert digest() == same  # asked again
    assert digest(data={"num_workers": 1}, compile=True, executor={"mem_gb": 3}) == same  # runtime settings
    assert digest("all") == same  # planned beside every other table
    assert digest(seeds=[0, 1]) != same and digest(linprobe={"epochs": 4}) != same
    assert digest(controls=False) != same
    no_controls = plan_for("table3", controls=False)
    table = no_controls.table_plan(no_controls.studies[0])
    assert not any(c.control or c.control_runs for c in table.cells)  # no control read, none declared
    assert len(no_controls.table_inputs(no_controls.studies[0])) == 9


def test_a_table_renders_from_its_plan_without_a_tracking_store(workdir):
    """`python -m harness.report.tables <plan file>`, by hand, with MLflow impossible to import: the
    table, its numbers those of the result files; no store written anywhere."""
    plan = plan_for("table3")
    study = plan.studies[0]
    numbers = write_results(plan, study, ratio=0.95)
    plan.write_table_plan("table3", plan.table_plan_file(study))
    blocked = ("import sys; sys.modules['mlflow'] = None; from harness.report.tables import main; "
               "sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", blocked, plan.table_plan_file(study)], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "**Table 3.**" in out.stdout and "table written" in out.stdout
    tables = Results(workdir / "results").tables
    for ext in ("md", "tex", "csv", "png", "pdf"):
        assert (tables / f"table3.{ext}").exists()
    assert not list(workdir.rglob("mlflow.db")) and not list(workdir.rglob("mlartifacts"))
    csv = pd.read_csv(tables / "table3.csv")
    assert len(csv) == 8 and (csv["n"] == 1).all()
    for row in csv.itertuples():
        assert row.ours == pytest.approx(numbers[row.signatures])
    ran = csv[csv.source == "this run"]
    assert (ran["pretrain_ratio"] == 0.95).all() and ran["control"].notna().all()
    md = (tables / "table3.md").read_text()
    assert "†" in md and "pre-training did not learn" in md  # the ratio of the pre-training result files

    # another results folder (--results), one result file gone: its cell is "—", the rest renders
    moved = workdir / "elsewhere"
    (workdir / "results").rename(moved)
    gone = plan.table_plan(study).cells[1].runs["finetune"]
    moved.joinpath("runs", gone, "finetune.json").unlink()
    out = subprocess.run([sys.executable, "-m", "harness.report.tables", str(moved / "tables" / "table3.plan.json"),
                          "--results", str(moved)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    csv = pd.read_csv(moved / "tables" / "table3.csv")
    missing = csv[csv.signatures == gone].iloc[0]
    assert missing.n == 0 and pd.isna(missing.ours) and (csv[csv.signatures != gone]["n"] == 1).all()
    assert not list(workdir.rglob("mlflow.db"))


def test_the_table_reads_only_the_runs_of_its_plan(workdir):
    """A finished run the plan does not name (the control, left out) is not in the table, even
    where its result file lies in the results folder."""
    from harness.report.tables import collect, read_runs

    full = plan_for("table3")
    write_results(full, full.studies[0])
    without = plan_for("table3", controls=False)
    table = without.table_plan(without.studies[0])
    runs = read_runs(table)
    assert set(runs.signature) == {sig for _, sig in table.inputs()} and len(runs) == 9
    long = collect(table, runs)
    assert "random init" not in set(long.setting) and long.control.isna().all()


def harness_imports(module) -> set[str]:
    """The harness modules a module's source imports, at its top or inside a function."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from harness import x`
    return {name for name in found if name.startswith("harness.") and is_module(name)}


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name inside a module, e.g. harness.plan.studies.expand
        return False


@pytest.mark.parametrize("name", ["harness.report.tables", "harness.report.figures", "harness.report.marks", "harness.plan.table_plan"])
def test_the_table_modules_are_in_no_import_cycle(name):
    """No module the table's modules import (directly or not) imports them back."""
    seen, todo = set(), [name]
    while todo:
        for imported in harness_imports(importlib.import_module(todo.pop())):
            assert imported != name, f"{name} imports itself back through {sorted(seen)}"
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
