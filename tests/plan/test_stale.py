"""Which finished runs are stale, and what starting one over keeps, on result files written here
(the end-to-end test with Snakemake is tests/workflow/test_stale.py)."""
import json
import shutil
from pathlib import Path

import pytest

import harness
from harness.core.layout import Results
from harness.plan.stale import Staleness, start_over
from harness.workflow.plan import Plan
from harness.workflow.stale import NOT_COMPARED, StaleRuns
from harness.science import methods


@pytest.fixture
def table3(tmp_path, monkeypatch):
    """Table 3 at tiny planned in tmp_path, every run 'finished' with today's code recorded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = Plan("tiny", {}, {}, results=Results(tmp_path / "results"), only=["table3"])
    for sig, run in plan.runs.items():
        folder = plan.results.run(sig)
        folder.path.mkdir(parents=True)
        code = methods.code_fingerprint(run.config.method, run.stage)
        folder.result(run.stage).write_text(json.dumps({"metrics": {"test_acc1": 50.0}, "code": code.to_json()}))
        folder.checkpoint.write_text("weights")
        folder.mlflow_run_id.write_text(f"run-{sig}")
    return plan


def edited_copy(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "harness"
    shutil.copytree(Path(harness.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    loss = root / "science" / "pixel_loss.py"
    loss.write_text(loss.read_text().replace("(pred - target).pow(2)", "(pred - target).abs()"))
    return root


def test_today_code_stale_nothing_and_no_recorded_code_is_not_stale(table3):
    assert Staleness(table3.runs, table3.results).stale() == []
    sig, run = next((s, r) for s, r in table3.runs.items() if r.stage == "pretrain")
    table3.results.run(sig).result("pretrain").write_text(json.dumps({"metrics": {}}))  # older code: no record
    state = Staleness(table3.runs, table3.results).state(sig)
    assert not state.stale and state.describe() == "code not recorded"


def test_a_loss_edit_makes_randsac_runs_and_their_evaluations_stale_not_the_control(table3, tmp_path):
    code = Staleness(table3.runs, table3.results, root=edited_copy(tmp_path))
    stale = set(code.stale())
    randsac = {s for s, r in table3.runs.items() if r.config.method == "randsac"}
    assert stale == randsac and len(randsac) == 9
    for sig in stale:
        state = code.state(sig)
        assert state.modules == ["harness.science.pixel_loss"]
        if table3.runs[sig].stage == "pretrain":
            assert state.changed == ("harness.science.pixel_loss",) and state.parent is None
        else:  # its own closure holds the loss too (RandSAC's module imports its model); and its parent
            assert state.parent == table3.runs[sig].parent


def test_superseded_param_grows_only_for_stale_runs_asked_to_rerun(table3, tmp_path):
    def invocation(rerun: bool, root=None) -> StaleRuns:  # a new Snakemake call: its own Plan
        plan = Plan("tiny", {}, {}, results=table3.results, only=["table3"], rerun_stale=rerun)
        plan.code = Staleness(plan.runs, plan.results, root=root)
        return StaleRuns(plan)

    sig = next(s for s, r in table3.runs.items() if r.stage == "pretrain")
    control = next(s for s, r in table3.runs.items() if r.config.method == "random_init")
    edited = edited_copy(tmp_path)
    assert invocation(False).superseded(sig) is NOT_COMPARED  # never started over: as runs from before the param
    assert invocation(False, edited).superseded(sig) is NOT_COMPARED  # stale, but nothing reruns by itself
    assert invocation(True).superseded(sig) is NOT_COMPARED  # rerun=stale, nothing stale
    rerun = invocation(True, edited)
    assert rerun.superseded(sig) == 1 and rerun.superseded(control) is NOT_COMPARED

    rerun.start_over([("pretrain", sig)])  # onstart: results kept aside, the old MLflow run tagged
    assert rerun.superseded(sig) == 1  # Snakemake asks again when the job starts: the same value
    assert invocation(False, edited).superseded(sig) == 1  # the next call, while it runs: its folder counts
    run = table3.results.run(sig)
    run.result("pretrain").write_text(json.dumps({"metrics": {}, "superseded": 1}))  # its new result
    shutil.rmtree(run.superseded()[0])  # space freed: the count the result recorded stands, nothing is redone
    assert invocation(False).superseded(sig) == 1


def test_start_over_keeps_everything_and_tags_the_old_mlflow_run(table3):
    sig = next(s for s, r in table3.runs.items() if r.stage == "pretrain")
    run, tagged = table3.results.run(sig), []
    (run.path / "submitit").mkdir()
    folder = start_over(run, "pretrain", "code changed", tag=lambda run_id, why: tagged.append((run_id, why)))
    assert folder.parent == run.path and folder.name.startswith("superseded-")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "mlflow_run_id", "pretrain.json"]
    assert sorted(p.name for p in run.path.iterdir()) == sorted(["submitit", folder.name])
    assert tagged == [(f"run-{sig}", "code changed")] and run.superseded() == [folder]
