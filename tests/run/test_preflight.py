"""Preflight (harness.run.preflight): a few steps of every distinct stage run of a target, measured,
before any full job; and every table at scale `paper` on the CPU, on CIFAR and ImageNet trees in
their real formats."""
import json
import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import submitit
import torch

from harness.workflow.plan import Plan
from harness.workflow.preflight import Preflight
from harness.run.executor import ExecutorConfig
from harness.run.preflight.probe import PreflightSettings, Probe, StepMeter, measure, per_device
from harness.run.preflight.report import project
from harness.run.preflight import submit
from harness.run.preflight.submit import computes_as, groups

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cifar_tree import cifar_checksums, write_cifar_tree  # noqa: E402
from imagenet_tree import write_imagenet_tree  # noqa: E402


def test_settings_from_the_command_line():
    assert PreflightSettings.of(None) is None and PreflightSettings.of(False) is None
    assert PreflightSettings.of(True) == PreflightSettings(steps=20, warmup=3)
    assert PreflightSettings.of({"steps": 5}) == PreflightSettings(steps=5, warmup=3)
    with pytest.raises(ValueError):
        PreflightSettings.of({"steps": 0})


def test_meter_times_whole_steps_and_compute_apart():
    meter = StepMeter(torch.device("cpu"), warmup=1, steps=2)
    loss = torch.tensor(1.0)
    # step 0 (warm-up) ends at 10; step 1: data until 13, compute until 14; step 2: data to 15, compute to 16
    meter.fetch_t, meter.step_t = [9.0, 13.0, 15.0], [10.0, 14.0, 16.0]
    meter.losses = [1.0, 1.0, 1.0]
    assert meter.full()
    steps, whole, compute = meter.rates(batch=8)
    assert steps == 2 and whole == pytest.approx(16 / 6) and compute == pytest.approx(16 / 2)
    meter.stepped(loss)
    assert meter.losses[-1] == 1.0


def test_projection_is_epochs_times_images_over_rate_times_devices(tiny_cfg):
    cfg = tiny_cfg()  # tiny: 256 training images, pretrain batch 64, 3 epochs here
    executor = ExecutorConfig(kind="slurm", gpus_per_node=4, tasks_per_node=4)
    out = project({"stage": "pretrain", "step_img_s": 100.0}, cfg, executor)
    assert (out["epochs"], out["train_images"], out["devices"]) == (3, 256, 4)
    assert out["wall_h"] == pytest.approx(3 * 256 / (100.0 * 4) / 3600)
    assert out["device_h"] == pytest.approx(out["wall_h"] * 4)
    assert project({"stage": "pretrain", "step_img_s": None}, cfg, executor)["device_h"] is None


def test_projection_adds_the_setup_once_and_an_evaluation_per_epoch(tiny_cfg):
    cfg = tiny_cfg()  # tiny: 256 training images, linprobe batch 64
    executor = ExecutorConfig(kind="slurm", gpus_per_node=2, tasks_per_node=2)
    out = project({"stage": "linprobe", "step_img_s": 64.0, "setup_s": 30.0, "eval_s": 5.0}, cfg, executor)
    assert out["epochs"] == cfg.linprobe.epochs and out["train_images"] == 256
    assert out["wall_h"] == pytest.approx((30.0 + cfg.linprobe.epochs * (256 / (64.0 * 2) + 5.0)) / 3600)
    assert out["device_h"] == pytest.approx(out["wall_h"] * 2)


def test_evaluations_that_differ_only_in_their_pretraining_are_measured_once(tiny_cfg):
    m1, m2 = tiny_cfg(0), tiny_cfg(1)  # square M=1 and M=2
    assert computes_as(m1, "pretrain") != computes_as(m2, "pretrain")
    assert computes_as(m1, "linprobe") == computes_as(m2, "linprobe")
    assert computes_as(m1, "finetune") == computes_as(m1.model_copy(update={"seed": 1}), "finetune")  # seeds alike


def test_slurm_jobs_are_one_per_model_and_dataset_local_one_for_all(tiny_cfg):
    a, b = tiny_cfg(0).model_dump(mode="json"), tiny_cfg(1).model_dump(mode="json")
    wide = {**b, "model": {**b["model"], "embed_dim": 64}}
    probes = [Probe("pretrain", "a", "", a), Probe("linprobe", "b", "", b), Probe("pretrain", "c", "", wide)]
    assert [len(g) for g in groups(probes, ExecutorConfig(kind="slurm"))] == [2, 1]
    assert [len(g) for g in groups(probes, ExecutorConfig())] == [3]


@pytest.mark.parametrize("stage", ["pretrain", "linprobe", "finetune"])
def test_measure_runs_a_few_steps_and_keeps_nothing(tiny_cfg, tmp_path, monkeypatch, stage):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where its throw-away run folder goes
    cfg = tiny_cfg()
    record = measure(Probe(stage, "x", "", cfg.model_dump(mode="json")), PreflightSettings(steps=2, warmup=1), 1, None)
    assert record["status"] == "ok", record["error"]
    assert record["steps"] == 2 and len(record["losses"]) == 3 and all(map(math.isfinite, record["losses"]))
    assert 0 < record["step_img_s"] <= record["compute_img_s"]
    assert 0 < record["peak_mem_gb"] < record["capacity_gb"]
    assert 0 < record["setup_s"] < record["seconds"]
    assert (record["eval_s"] is None) == (stage == "pretrain")  # evaluation stages time one evaluation
    assert stage == "pretrain" or 0 < record["eval_s"] < record["seconds"]
    assert list(tmp_path.iterdir()) == []  # the run folder is gone; no checkpoint was written anywhere


def test_a_failing_run_is_its_one_line(tiny_cfg):
    cfg = tiny_cfg(**{"finetune.batch_size": 63})  # mixup needs an even batch
    record = measure(Probe("finetune", "x", "", cfg.model_dump(mode="json")), PreflightSettings(steps=2, warmup=1),
                     1, None)
    assert record["status"] == "failed"
    assert record["error"] == "AssertionError: Batch size should be even when using this"


def test_per_device_batch_is_the_share_of_one_process(tiny_cfg):
    cfg = per_device(tiny_cfg(), "finetune", 4)
    assert cfg.finetune.batch_size == 16 and cfg.pretrain.batch_size == 64


# ------------------------------------------------------------------------------- end to end

@pytest.mark.integration
def test_snakemake_preflight_writes_the_report_and_no_run(tmp_path, snakemake):
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", "preflight={steps: 2, warmup: 1}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    md = (tmp_path / "results" / "preflight" / "table3.md").read_text()
    assert md.startswith("# Preflight of table3") and "device-hours" in md and md in out.stdout
    rows = pd.read_csv(tmp_path / "results" / "preflight" / "table3.csv")
    assert len(rows) == 11 and set(rows["status"]) == {"ok"}  # every stage run of Table 3
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["preflight"]  # no run, no MLflow store

    again = snakemake(tmp_path, "table3", "--config", "scale=tiny", "preflight={steps: 2, warmup: 1}", "-n")
    assert "rule preflight" in again.stdout  # asked again, a preflight measures again


@pytest.mark.integration
def test_a_failing_stage_run_stops_the_workflow_with_its_line(tmp_path, snakemake):
    """A failed preflight fails the command with each failed run's line after Snakemake's own
    report, writes its report beside the last good one and keeps that (and the bill it feeds)."""
    good = snakemake(tmp_path, "table3", "--config", "scale=tiny", "controls=false", "preflight={steps: 2, warmup: 1}")
    assert good.returncode == 0, good.stderr[-3000:]
    reports = tmp_path / "results" / "preflight"
    before = (reports / "table3.md").read_text(), (reports / "table3.csv").read_text()
    assert "| steps |" in before[0] and "up to 2 steps each after 1 warm-up" in before[0]
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", "controls=false", "preflight={steps: 2, warmup: 1}",
                    "finetune={batch_size: 63}")
    assert out.returncode != 0
    assert "preflight: finetune" in out.stderr and "AssertionError: Batch size should be even" in out.stderr
    # the run's line comes after Snakemake's report of the failed rule
    assert out.stderr.rindex("randsac-harness: preflight: finetune") > out.stderr.rindex("Error in rule")
    assert "the last good report stays in results/preflight/table3.md" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()
    assert ((reports / "table3.md").read_text(), (reports / "table3.csv").read_text()) == before
    assert "**failed**" in (reports / "table3.failed.md").read_text()
    kept = list((reports / "table3").glob("*/report.md"))
    assert len(kept) == 2 and sum("**failed**" in k.read_text() for k in kept) == 1


@pytest.mark.integration
def test_every_table_at_paper_scale_runs_on_the_cpu(tmp_path, monkeypatch, capsys):
    """Every distinct stage run of the ten tables at scale `paper`, with only batch and subset cut:
    the paper's models, recipes and readers (CIFAR pickles, ImageNet folders, the ImageNet-100
    classes) take their steps with finite losses. The jobs run in this process (submitit's debug
    executor), where the CIFAR trees' md5 sums are patched into torchvision."""
    root = tmp_path / "data"
    for name in ("cifar10", "cifar100"):
        write_cifar_tree(root, name, n_train=16, n_test=8)
    write_imagenet_tree(root, n_train=1, n_val=1)
    monkeypatch.setattr(submit, "make_executor",
                        lambda executor, folder: submitit.AutoExecutor(folder=folder, cluster="debug"))
    pairs = {"batch_size": 2}  # the smallest batch of the evaluations: mixup and cutmix pair images, the probe's
    # BatchNorm needs two; pre-training takes one (ViT-S/16 and ViT-B/16 steps at 224 px are most of the time)
    with ExitStack() as patched:
        for name in ("cifar10", "cifar100"):
            patched.enter_context(cifar_checksums(root, name))
        plan = Plan.from_snakemake_config(
            {"scale": "paper", "preflight": {"steps": 1, "warmup": 1},
             "data": {"root": str(root), "train_subset": 16, "test_subset": 8},
             "pretrain": {"batch_size": 1}, "linprobe": pairs, "finetune": pairs}, ["all"])
        plan.results = type(plan.results)(tmp_path / "results")
        started = time.time()
        Preflight(plan).run("all")
    seconds = time.time() - started
    rows = pd.read_csv(tmp_path / "results" / "preflight" / "all.csv", keep_default_na=False, dtype=str).to_dict("records")
    assert len(rows) == len(plan.runs) and {r["status"] for r in rows} == {"ok"}
    assert {r["dataset"] for r in rows} == {"cifar10", "cifar100", "imagenet100", "imagenet1k"}
    assert {r["model"] for r in rows} >= {"ViT 192x12/4", "ViT 384x12/4", "ViT 384x12/16", "ViT 768x12/16"}
    measured = [r for r in rows if not r["measured_as"]]
    for folder in (tmp_path / "results" / "preflight" / "all").iterdir():
        for line in (folder / "job0.jsonl").read_text().splitlines() if folder.is_dir() else []:
            record = json.loads(line)
            assert len(record["losses"]) == 2 and all(map(math.isfinite, record["losses"])), record
    assert all(float(r["device_h"]) > 0 for r in rows)
    print(f"{len(rows)} stage runs, {len(measured)} measured, in {seconds:.0f} s")
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.integration
def test_the_bill_before_and_the_dry_run_after_a_preflight(tmp_path, snakemake, capsys):
    from harness import status

    before = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny")
    assert "[harness] bill: 11 unfinished runs of table3; no preflight measured them" in before.stdout
    assert "--config preflight=true" in before.stdout
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", "preflight={steps: 1, warmup: 1}")
    assert out.returncode == 0, out.stderr[-3000:]
    total = pd.read_csv(tmp_path / "results" / "preflight" / "table3.csv")["device_h"].sum()
    after = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny")
    assert f"[harness] bill: 11 unfinished runs of table3: {total:,.1f} device-hours projected for 11 of them" \
        in after.stdout
    assert status.main(["table3", "--config", "scale=tiny", "--directory", str(tmp_path)]) == 0
    assert f"{total:,.1f} device-hours projected" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slurm
@pytest.mark.usefixtures("slurm")
def test_slurm_preflight_runs_as_slurm_jobs_and_a_failure_stops_the_workflow(tmp_path, snakemake):
    small = "executor={cpus_per_task: 1, mem_gb: 2, timeout_min: 20}"  # the profile's gpu partition, sized to fit
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", small, "preflight={steps: 1, warmup: 1}",
                    profile="slurm")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[preflight] table3: job " in out.stdout and "**Total:" in out.stdout
    csv = (tmp_path / "results" / "preflight" / "table3.csv").read_text()
    assert "slurm partition gpu, 1 node(s) x 1 task(s) x 1 CPUs, 1 GPU(s)/node, 2 GB" in csv
    logs = list((tmp_path / "results" / "preflight" / "table3").glob("*/job*/*_submission.sh"))
    assert logs and "#SBATCH --gpus-per-node=1" in logs[0].read_text()  # the full runs' resources
    failed = snakemake(tmp_path, "table3", "--config", "scale=tiny", small, "preflight={steps: 1, warmup: 1}",
                       "finetune={batch_size: 63}", profile="slurm")
    assert failed.returncode != 0 and "AssertionError: Batch size should be even" in failed.stderr
    assert not (tmp_path / "results" / "runs").exists()
