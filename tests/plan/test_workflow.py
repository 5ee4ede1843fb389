"""The plan Snakemake reads: targets, scales, config keys, executor settings, seeds and file
targets; bad input is refused with one clear line."""
import pytest

import torch

from harness.plan.studies import ConfigError, expand, load_study, plan
from harness.plan.targets import studies_for
from harness.workflow.plan import Plan

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_unknown_target_is_refused():
    with pytest.raises(ConfigError, match="unknown target 'table99'; targets are all, table1"):
        studies_for(["table99"])
    assert studies_for(["table3", "table6"]) == ["table3", "table6"] and studies_for(["all"]) is None


@NO_GPU
def test_a_gpu_asked_of_a_machine_without_one_is_refused():
    with pytest.raises(ConfigError, match="a GPU is asked for"):
        Plan.from_snakemake_config({"scale": "tiny", "device": "cuda"}, ["table3"])
    with pytest.raises(ConfigError, match="but this machine has no CUDA device"):
        Plan.from_snakemake_config({"scale": "tiny", "executor": {"gpus_per_node": 1}}, ["table3"])


def test_unknown_study_scale_and_key():
    with pytest.raises(ConfigError, match="unknown study 'table99'.*studies are .*table3"):
        load_study("table99")
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        Plan.from_snakemake_config({"scale": "huge"})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['epochs'\]"):
        Plan.from_snakemake_config({"epochs": 3})


def test_missing_dataset_is_refused_before_submission(tmp_path):
    with pytest.raises(ConfigError, match="cifar10.*python -m harness.fetch cifar10"):
        Plan.from_snakemake_config({"scale": "paper", "data": {"root": str(tmp_path / "nowhere")}})


def test_executor_checks():
    with pytest.raises(ConfigError, match="executor: kind: Input should be 'local' or 'slurm'"):
        Plan.from_snakemake_config({"scale": "tiny", "executor": {"kind": "pbs"}})
    with pytest.raises(ConfigError, match="executor: mem_gbb: Extra inputs are not permitted"):
        Plan.from_snakemake_config({"scale": "tiny", "executor": {"mem_gbb": "2"}})


def test_executor_overrides_from_snakemake_config():
    # Snakemake parses nested --config values with YAML's BaseLoader: every leaf is a string
    p = Plan.from_snakemake_config({"scale": "tiny", "executor": {"kind": "local", "cpus_per_task": "1"},
                                    "pretrain": {"epochs": "1"}, "seed": 3})
    assert p.executor.cpus_per_task == 1 and p.overrides == {"pretrain": {"epochs": "1"}, "seed": 3}
    assert all(r.config.pretrain.epochs == 1 and r.config.seed == 3 for r in p.runs.values())


def test_a_local_stage_job_holds_as_many_of_snakemakes_cores_as_it_has_threads():
    """So that `--cores` bounds the threads of the jobs run at once; a launcher of a Slurm job
    only waits (its threads are on the cluster)."""
    def threads(executor):
        return Plan.from_snakemake_config({"scale": "tiny", "executor": executor}, ["table3"]).job_threads

    assert threads({"kind": "local", "cpus_per_task": 2}) == 2
    assert threads({"kind": "local", "cpus_per_task": 1}) == 1
    assert threads({"kind": "local", "cpus_per_task": 1, "tasks_per_node": 2}) == 2


def test_seeds_from_the_command_line_replace_the_studys():
    cells = expand(load_study("table3"), "tiny", seeds=[0, 1, 2])
    assert sorted({c.seed for c in cells}) == [0, 1, 2] and len(cells) == 4 * 3
    from harness.workflow.plan import Plan

    plan3 = Plan.from_snakemake_config({"scale": "tiny", "seeds": ["0", "1", "2"]}, ["table3"])  # as Snakemake parses
    assert plan3.cells.seeds == [0, 1, 2] and len(plan3.runs) == 3 * (3 * 3 + 2)
    assert sorted({c.seed for c in plan3.table_plan(plan3.studies[0]).cells}) == [0, 1, 2]  # what its table shows


def test_file_targets_plan_only_the_studies_they_belong_to():
    """A run's result file as the target: only the tables holding that run are planned, so an
    override another table varies (K, for Table 5) is not refused; an unknown run is one line."""
    from harness.plan.studies import ConfigError
    from harness.plan.targets import CellOptions, studies_of_files

    overrides = {"segments": {"count": 9}}
    with pytest.raises(ConfigError, match="sets what table5 varies"):
        plan([load_study("table5")], "tiny", overrides)
    runs = plan([load_study("table10")], "tiny", overrides)
    sig = next(s for s, r in runs.items() if r.stage == "pretrain")
    assert studies_of_files([f"results/runs/{sig}/pretrain.json"], "tiny", overrides, CellOptions()) == ["table10"]
    assert studies_of_files(["results/tables/table3.md"], "tiny", {}, CellOptions()) == ["table3"]
    with pytest.raises(ConfigError, match="no study plans 000000000000 at scale tiny"):
        studies_of_files(["results/runs/000000000000/pretrain.json"], "tiny", {}, CellOptions())
