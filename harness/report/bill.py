"""The bill after: the device-hours a table's runs spent (the bill before, projected from the
last preflight, is harness.run.preflight's `projected`).

`spent_hours(run)` is a run's wall time x devices over every attempt, read from its submitit
logs (results/runs/<sig>/submitit/<attempt>/): each start of the job ("Starting with
JobEnvironment", a Slurm requeue appends to the same log) to its last logged line; the devices
from the attempt's sbatch script (GPUs per node x nodes; a job without GPUs counts as one device
per node, a local job as one). Tables add it per cell (`with_spent`).
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from harness.core import metrics as names
from harness.core.layout import Results, RunFolder
from harness.core.stages import PRETRAIN

_STAMP = re.compile(r"^submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\) - (.*)$")


# --------------------------------------------------------------------------- spent

def _devices(script: Path) -> int:
    """Devices a Slurm attempt held, from its sbatch script; 1 for a local job (no script)."""
    if not script.exists():
        return 1
    text = script.read_text()
    nodes = re.search(r"^#SBATCH --nodes=(\d+)", text, re.M)
    gpus = re.search(r"^#SBATCH --gpus-per-node=(\d+)", text, re.M)
    return (int(nodes.group(1)) if nodes else 1) * max(int(gpus.group(1)) if gpus else 0, 1)


# submitit's last line of a job that ended by itself (not killed, not still running)
_ENDED = ("Exiting after successful completion", "Job completed successfully", "Submitted job triggered an exception")


def attempts(log: Path) -> list[float]:
    """Seconds of every start of the job whose first task logs to `log`: from its "Starting with"
    line to the last timestamped line before the next start; the last one to the line saying the
    job ended, or, without one (running, or killed), to the log's last write. (Not the write
    time of an ended job's log: a copy of results/ made without -p would bill it until the copy.)"""
    spans, start, last, said = [], None, None, ""
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        if m.group(2).startswith("Starting with"):
            if start is not None:
                spans.append(last - start)
            start = t
        last, said = t, m.group(2)
    if start is not None:
        ended = said.startswith(_ENDED)
        spans.append((last if ended else max(last, log.stat().st_mtime)) - start)
    return spans


def spent_hours(run: RunFolder) -> float | None:
    """A run's device-hours over every attempt (requeues included); None when it has no job log."""
    total, seen = 0.0, False
    for log in sorted(run.submitit.glob("*/*_0_log.out")) if run.submitit.exists() else []:
        job_id = log.name.split("_")[0]
        seconds = sum(attempts(log))
        total += seconds / 3600 * _devices(log.parent / f"{job_id}_submission.sh")
        seen = True
    return total if seen else None


def with_spent(long: pd.DataFrame, plan, results: Results) -> tuple[pd.DataFrame, float | None]:
    """The table's long form with `device_h`: per row, the device-hours spent by its runs (its
    evaluations and the pre-training they read, over seeds); and the table's total, each run
    counted once (a pre-training shared by a cell's metrics, or by tables, is one run)."""
    spent = {sig: spent_hours(results.run(sig)) for _, sig in plan.inputs()}
    per_row = {}
    for c in plan.cells:
        for metric in plan.study.metrics:
            stage = names.TABLE_METRIC_STAGE[metric]
            if stage in c.runs:
                sigs = per_row.setdefault((c.dataset, c.setting, names.TABLE_METRIC_NAME[metric]), set())
                sigs |= {c.runs[stage], *([c.runs[PRETRAIN]] if PRETRAIN in c.runs else [])}
    hours = []
    for r in long.itertuples():
        known = [spent[s] for s in per_row.get((r.paper_dataset, r.setting, r.metric), ()) if spent.get(s) is not None]
        hours.append(sum(known) if known else None)
    measured = [h for h in spent.values() if h is not None]
    return long.assign(device_h=hours), (sum(measured) if measured else None)


def spent_note(total: float | None) -> str | None:
    if total is None:
        return None
    return (f"Spent: {total:,.2f} device-hours over the table's runs (wall time x devices of every attempt, "
            f"requeues included; each run once; per cell in the CSV's device_h).")
