"""Configs, signatures, studies and the plan; bad input is refused with one clear line."""
import pytest

import torch

from harness.core.config import RunConfig, dotted_to_nested
from harness.science.methods import signature
from harness.studies import ConfigError, expand, load_study, plan
from harness.workflow import Plan, studies_for

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def cells(scale="tiny", **dotted):
    return expand(load_study("table3"), scale, dotted_to_nested(dotted))


def test_table3_cells():
    cs = cells()
    assert [c.setting for c in cs] == ["square M=1", "square M=2", "square M=4", "random init"]
    assert {c.dataset for c in cs} == {"cifar10"}
    assert [c.config.segments.size for c in cs[:3]] == [1, 2, 4] and not any(c.control for c in cs[:3])
    assert all(c.config.segments.order == "random" for c in cs)
    control = cs[3]
    assert control.control and control.config.method == "random_init"
    assert control.stages(["lin", "ft"]) == ["linprobe", "finetune"]  # no pre-training
    assert control.config.model == cs[1].config.model and control.config.finetune == cs[1].config.finetune


def test_paper_scale_is_the_paper_recipe():
    cfg = cells("paper")[1].config
    assert (cfg.data.name, cfg.data.image_size) == ("cifar10", 32)
    m = cfg.model
    assert (m.patch_size, m.embed_dim, m.depth, m.num_heads, m.decoder_depth) == (4, 192, 12, 3, 3)
    assert (cfg.pretrain.optimizer, cfg.pretrain.weight_decay, cfg.pretrain.base_lr) == ("adamw", 0.05, 1e-3)
    assert cfg.pretrain.lr == pytest.approx(1e-3 * 512 / 256)
    assert (cfg.linprobe.epochs, cfg.finetune.epochs) == (90, 100)
    f = cfg.finetune
    assert (f.drop_path, f.mixup, f.cutmix, f.label_smoothing) == (0.1, 0.8, 1.0, 0.1)


def test_signature_is_the_config():
    a, b = cells()[1].config, cells()[1].config
    assert signature(a, "pretrain") == signature(b, "pretrain")
    changed = RunConfig.model_validate({**a.model_dump(), "seed": 1})
    assert signature(changed, "pretrain") != signature(a, "pretrain")
    # where the data lives and how many workers load it do not change what is computed
    moved = RunConfig.model_validate({**a.model_dump(), "data": {**a.data.model_dump(), "root": "/x", "num_workers": 4}})
    assert signature(moved, "pretrain") == signature(a, "pretrain")
    # an evaluation-only change keeps the pre-training run and changes the evaluation run
    probe = RunConfig.model_validate({**a.model_dump(), "linprobe": {**a.linprobe.model_dump(), "epochs": 7}})
    assert signature(probe, "pretrain") == signature(a, "pretrain")
    assert signature(probe, "linprobe") != signature(a, "linprobe")
    assert signature(probe, "finetune") == signature(a, "finetune")


def test_plan_dedups_same_config():
    study = load_study("table3")
    runs = plan([study, study], "tiny")
    assert sorted(r.stage for r in runs.values()) == ["finetune"] * 4 + ["linprobe"] * 4 + ["pretrain"] * 3
    assert sorted(r.stage for r in plan([study], "tiny", controls=False).values()) == \
        ["finetune"] * 3 + ["linprobe"] * 3 + ["pretrain"] * 3
    for r in runs.values():
        if r.parent:
            assert runs[r.parent].stage == "pretrain"


@pytest.mark.parametrize("overrides,message", [
    ({"segments.size": 3}, "M=3 does not divide the 8x8 token grid"),
    ({"model.patch_size": 5}, "patch_size=5 does not divide data.image_size=32"),
    ({"pretrain.epochz": 2}, "pretrain.epochz: Extra inputs are not permitted"),
    ({"model.num_heads": 3}, "embed_dim=32 is not divisible by model.num_heads=3"),
    ({"pretrain.epochs": 0}, "pretrain.epochs: Input should be greater than 0"),
    ({"segments.order": "spiral"}, "segments.order: Input should be 'random' or 'raster'"),
    ({"method": "byol"}, "unknown method 'byol'; methods are randsac, mae, dino, supervised"),
])
def test_bad_overrides_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        cells(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("study table3, cell cifar10: square M=")


@pytest.mark.parametrize("study,overrides,message", [
    ("table5", {"segments.count": 65}, "K=65 is larger than the 64 tokens"),
    ("table6", {"segments.hierarchy": [32]}, "32 partitions of 4 units"),
])
def test_bad_segments_of_other_tables(study, overrides, message):
    with pytest.raises(ConfigError, match=message):
        expand(load_study(study), "tiny", dotted_to_nested(overrides))


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


def test_slurm_checks_against_what_sinfo_reports(tmp_path, monkeypatch):
    """A fake sinfo: partition cpu (default, 2 CPUs, 20 GB, no GPU), gpu (2 fake GPUs, 4 h limit)."""
    from harness.launch import ExecutorConfig
    from harness.workflow import check_slurm

    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\nprintf 'node1|cpu*|2|20480|(null)|infinite\\nnode1|gpu|2|20480|gpu:2|4:00:00\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    check_slurm(ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=2, mem_gb=16,
                               timeout_min=240))
    check_slurm(ExecutorConfig(kind="slurm", cpus_per_task=1, tasks_per_node=2))  # the default partition
    with pytest.raises(ConfigError, match="gpus_per_node=1 but partition 'cpu' has no GPUs"):
        check_slurm(ExecutorConfig(kind="slurm", partition="cpu", gpus_per_node=1))
    with pytest.raises(ConfigError, match="partition 'a100' is unknown to Slurm; known: cpu, gpu"):
        check_slurm(ExecutorConfig(kind="slurm", partition="a100"))
    with pytest.raises(ConfigError, match=r"partition 'gpu' has 0 node\(s\) with 10 CPUs \(1 task\(s\) x 10\), 64 GB "
                                          r"and 1 GPUs, 1 asked for; its largest node offers 2 CPUs, 20.0 GB, 2 GPUs"):
        check_slurm(ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=10, mem_gb=64,
                                   timeout_min=60))
    with pytest.raises(ConfigError, match="2 asked for"):
        check_slurm(ExecutorConfig(kind="slurm", partition="cpu", cpus_per_task=1, nodes=2))
    with pytest.raises(ConfigError, match=r"timeout_min=1440 is beyond the time limit of partition 'gpu' \(240 min\)"):
        check_slurm(ExecutorConfig(kind="slurm", partition="gpu", timeout_min=1440))
    check_slurm(ExecutorConfig(kind="slurm", timeout_min=2, signal_delay_s=30))  # signal 60-90 s in
    with pytest.raises(ConfigError, match=r"timeout_min=1 with signal_delay_s=30: Slurm may send the time-limit "
                                          r"signal up to 60 s earlier than asked"):
        check_slurm(ExecutorConfig(kind="slurm", timeout_min=1, signal_delay_s=30))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="sinfo is not on PATH"):
        check_slurm(ExecutorConfig(kind="slurm"))
