"""Data-parallel stages: N processes (gloo on the CPU) against one process with the same global batch."""
import pytest
import torch

from harness.core.config import dotted_to_nested
from harness.core.stages import OptimConfig
from harness.core.layout import Results
from harness.run.executor import ExecutorConfig
from harness.run.launch import submit
from harness.stages import engine
from harness.stages.context import StageContext
from harness.stages.distributed import Dist
from harness.plan.studies import expand, load_study
from harness.run.tracking import Store

EPOCHS = 4
# Two processes draw other random crops and serializations than one process does, so their
# losses cannot be bit-identical: each epoch's mean loss must agree within this relative
# tolerance, which is below the spread between two seeds of the single-process run.
TOLERANCE = 0.05


def cell(seed=0):
    return expand(load_study("table3"), "tiny", dotted_to_nested(
        {"pretrain.epochs": EPOCHS, "data.train_subset": 512, "seed": seed}))[1]


def losses(results: Results, sig):
    c = Store.of(results).client()
    run = c.get_run(results.run(sig).mlflow_run_id.read_text())
    return [m.value for m in sorted(c.get_metric_history(run.info.run_id, "pretrain/loss"), key=lambda m: m.step)], run


def run_pretrain(root, executor: ExecutorConfig, seed=0):
    c, results = cell(seed), Results(root)
    job = submit("pretrain", c.config, results, executor, tracking_uri=Store.of(results).uri)
    assert len(job.results()) == executor.tasks_per_node * executor.nodes
    return losses(results, c.signature("pretrain"))


def compare(tmp_path, kind: str, **extra):
    one = ExecutorConfig(kind=kind, cpus_per_task=2, **extra)
    two = ExecutorConfig(kind=kind, cpus_per_task=1, tasks_per_node=2, **extra)
    single, _ = run_pretrain(tmp_path / "one", one)
    other_seed, _ = run_pretrain(tmp_path / "seed1", one, seed=1)
    parallel, run = run_pretrain(tmp_path / "two", two)
    assert run.data.tags["world_size"] == "2"  # a tag: how a run ran, not what it is
    assert run.data.tags["torch_threads"] == "1"  # the executor's cpus_per_task
    assert len(parallel) == len(single) == EPOCHS
    rel = [abs(p - s) / s for p, s in zip(parallel, single)]
    seed_rel = [abs(o - s) / s for o, s in zip(other_seed, single)]
    print(f"{kind}: 2 processes vs 1, relative loss difference per epoch {rel}; seed 1 vs 0: {seed_rel}")
    assert max(rel) < TOLERANCE
    assert parallel[-1] < parallel[0]  # it trains
    ckpt = torch.load(tmp_path / "two" / "runs" / cell().signature("pretrain") / "checkpoint.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2  # every rank's random stream is saved for an exact resume


@pytest.mark.integration  # submitit, three pre-training jobs
def test_two_local_processes_match_one_with_the_same_global_batch(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    compare(tmp_path, "local")


@pytest.mark.integration
@pytest.mark.slurm
def test_two_task_slurm_job_matches_one_process(tmp_path, monkeypatch, slurm):
    """A 2-task CPU job (gloo) through Slurm: same loss trajectory as one process, same global batch."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    compare(tmp_path, "slurm", partition="cpu", mem_gb=2, timeout_min=20)


def test_batch_must_split_over_the_processes(tmp_path, tiny_cfg):
    ctx = StageContext(tiny_cfg(), Results(tmp_path).run("x"), dist=Dist(0, 2))
    task = engine.Task(train_set=[], opt=OptimConfig(epochs=1, batch_size=63, base_lr=1.0), module=None,
                       optimizer=None, schedule=None, loss=None, saved={})
    with pytest.raises(ValueError, match="batch_size 63 does not split over 2 processes"):
        engine.fit(ctx, task)
