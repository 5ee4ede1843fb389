"""The bill: device-hours projected from the last preflight (harness.run.preflight), and spent
(harness.report.bill)."""
import os
import time
from types import SimpleNamespace

import pytest

from harness.core.layout import Results
from harness.report import bill
from harness.run.executor import ExecutorConfig


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ",000"


def write_log(folder, job_id: str, starts_ends: list[tuple[float, float]], gpus: int | None, nodes: int = 1):
    """A submitit attempt folder: the first task's log, one start per (re)queue, and its sbatch script."""
    folder.mkdir(parents=True)
    lines = []
    for start, end in starts_ends:
        lines += [f"submitit INFO ({stamp(start)}) - Starting with JobEnvironment(job_id={job_id}, ...)",
                  "[M=2 · pretrain · s0 · table3] epoch 1/2  loss 1.0",
                  f"submitit INFO ({stamp(end)}) - Job has timed out. Ran 10 minutes out of requested 10 minutes."]
    log = folder / f"{job_id}_0_log.out"
    log.write_text("\n".join(lines) + "\n")
    os.utime(log, (starts_ends[-1][1], starts_ends[-1][1]))
    if gpus is not None:
        (folder / f"{job_id}_submission.sh").write_text(
            f"#!/bin/bash\n#SBATCH --gpus-per-node={gpus}\n#SBATCH --nodes={nodes}\n#SBATCH --job-name=x\n")


def test_spent_is_wall_time_times_devices_over_every_attempt_requeues_included(tmp_path):
    run = Results(tmp_path).run("abcdef012345")
    t0 = 1_700_000_000.0
    write_log(run.submitit / "a1", "11", [(t0, t0 + 3600), (t0 + 7200, t0 + 9000)], gpus=4, nodes=2)  # a requeue
    write_log(run.submitit / "a2", "12", [(t0 + 10000, t0 + 10000 + 1800)], gpus=0)  # a CPU job: one device
    assert bill.attempts(run.submitit / "a1" / "11_0_log.out") == [3600, 1800]
    assert bill.spent_hours(run) == pytest.approx((3600 + 1800) / 3600 * 8 + 0.5)
    assert bill.spent_hours(Results(tmp_path).run("000000000000")) is None  # never ran here


def test_a_copied_log_of_an_ended_job_bills_until_it_ended_not_until_the_copy(tmp_path):
    log = tmp_path / "a" / "13_0_log.out"
    t0 = 1_700_000_000.0
    write_log(log.parent, "13", [(t0, t0 + 600)], gpus=0)
    with open(log, "a") as f:
        f.write(f"submitit INFO ({stamp(t0 + 610)}) - Job completed successfully\n"
                f"submitit INFO ({stamp(t0 + 610)}) - Exiting after successful completion\n")
    os.utime(log, (t0 + 86400, t0 + 86400))  # `cp -r` a day later
    assert bill.attempts(log) == [610]
    killed = tmp_path / "b" / "14_0_log.out"  # no line says it ended: until its last write
    write_log(killed.parent, "14", [(t0, t0 + 600)], gpus=0)
    os.utime(killed, (t0 + 900, t0 + 900))
    assert bill.attempts(killed) == [900]


def test_projected_sums_the_newest_preflight_of_unfinished_runs_on_this_executor(tmp_path):
    results = Results(tmp_path)
    executor = ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1)
    from harness.run import preflight
    from harness.run.preflight import PreflightSettings, Report

    where = '"' + Report("t", executor, PreflightSettings()).where() + '"'  # quoted: it holds commas
    results.preflights.mkdir(parents=True)
    head = "signature,status,device_h,executor,measured\n"
    (results.preflights / "table3.csv").write_text(
        head + f"aaa,ok,10,{where},2026-01-01 00:00:00 UTC\nbbb,ok,5,{where},2026-01-01 00:00:00 UTC\n"
               f"ccc,ok,7,local elsewhere,2026-01-01 00:00:00 UTC\n")
    (results.preflights / "all.csv").write_text(head + f"aaa,ok,12,{where},2026-02-01 00:00:00 UTC\n")
    runs = {s: SimpleNamespace(stage="pretrain") for s in ("aaa", "bbb", "ccc", "ddd")}
    results.run("bbb").path.mkdir(parents=True)
    results.run("bbb").result("pretrain").write_text("{}")  # done: costs nothing more
    line = preflight.projected(runs, results, executor, "table3")
    assert "3 unfinished runs of table3: 12.0 device-hours projected for 1 of them" in line  # the newest, 12
    assert "2 not measured on this executor" in line and "--config preflight=true" in line
    none = preflight.projected(runs, results, ExecutorConfig(), "table3")
    assert "no preflight measured them on this executor (local" in none


def test_a_table_gets_each_cells_spent_hours_and_its_total_counts_each_run_once(tmp_path):
    import pandas as pd

    from harness.core.metrics import TABLE_METRIC_NAME

    results = Results(tmp_path)
    t0 = 1_700_000_000.0
    for sig, hours in (("pre", 2.0), ("lin", 0.5), ("ft", 1.0)):
        write_log(results.run(sig).submitit / "a", "1", [(t0, t0 + hours * 3600)], gpus=1)
    cell = SimpleNamespace(dataset="cifar10", setting="M=2", runs={"pretrain": "pre", "linprobe": "lin", "finetune": "ft"})
    plan = SimpleNamespace(cells=[cell], study=SimpleNamespace(metrics=["lin", "ft"]),
                           inputs=lambda: [("pretrain", "pre"), ("linprobe", "lin"), ("finetune", "ft")])
    long = pd.DataFrame([{"paper_dataset": "cifar10", "setting": "M=2", "metric": TABLE_METRIC_NAME[m]}
                         for m in ("lin", "ft")] + [{"paper_dataset": "cifar10", "setting": "other", "metric": "x"}])
    out, total = bill.with_spent(long, plan, results)
    assert out["device_h"].tolist()[:2] == pytest.approx([2.5, 3.0]) and pd.isna(out["device_h"].iloc[2])
    assert total == pytest.approx(3.5)  # the pre-training once
    assert "3.50 device-hours" in bill.spent_note(total) and bill.spent_note(None) is None
