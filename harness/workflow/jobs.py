"""What each stage job is launched with: its job file (results/.launch/) and the MLflow tags and
description that name it after the cells it serves."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.files import write_text_atomic
from harness.core.metrics import TABLE_METRIC_NAME, TABLE_METRIC_STAGE
from harness.plan.studies import StageRun

if TYPE_CHECKING:
    from harness.workflow.plan import Plan


def job_file(plan: "Plan", sig: str, stage: str) -> tuple[Path, str]:
    """results/.launch/<stage>-<sig>-<hash>.json and its text, named by its content: two
    invocations with other settings (executor, tags) running at once never overwrite each
    other's."""
    run = plan.run(sig, stage)
    text = json.dumps({"config": run.config.model_dump(mode="json"), "executor": plan.executor.model_dump(mode="json"),
                       "tracking_uri": plan.store.uri, "tags": mlflow_tags(plan, sig, stage)}, indent=1)
    return plan.results.launch / f"{stage}-{sig}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.json", text


def job_args(plan: "Plan", sig: str, stage: str) -> str:
    """How this invocation runs it: a file holding the whole resolved config (launch checks
    that it has the signature), the executor, the tracking store and the MLflow tags of the
    first table that asks for it. Not part of what Snakemake compares. A file, not the
    command line: Snakemake prints a failed job's command (twice), and 3 KB of JSON there
    buried the launcher's one-line reason."""
    return shlex.join(["--job", str(job_file(plan, sig, stage)[0])])


def write_job_files(plan: "Plan") -> None:
    """Every planned run's job file, before any job starts (Snakemake's onstart, so that a dry
    run writes nothing); each written whole (a launcher never reads half of one), once."""
    for sig, run in plan.runs.items():
        path, text = job_file(plan, sig, run.stage)
        if not path.exists():
            write_text_atomic(path, text)


def mlflow_tags(plan: "Plan", sig: str, stage: str) -> dict[str, str]:
    """The run's name (what differs: setting, stage, seed, table), the cell it is in the first
    table asking for it, every other cell it serves, and a description."""
    run = plan.run(sig, stage)
    cell = run.cells[0]
    study = plan.study(cell.study)
    dataset = f" · {cell.dataset}" if len(study.datasets) > 1 and run.config.data.name == cell.dataset else ""
    return {"mlflow.runName": f"{cell.short}{dataset} · {stage} · s{cell.seed} · {cell.study}",
            "table": cell.study, "cell": cell.setting, "paper_dataset": cell.dataset, "scale": plan.scale,
            "seed": str(run.config.seed),
            "cells": "; ".join(f"{c.study}: {c.label}" for c in run.cells),
            "mlflow.note.content": description(plan, run, stage)}


def description(plan: "Plan", run: StageRun, stage: str) -> str:
    """The run page's description (Markdown): the cell, the paper's value, comparability."""
    cell = run.cells[0]
    study = plan.study(cell.study)
    lines = [f"**{cell.study} · {cell.setting}**, {stage}, seed {cell.seed}: the paper's {cell.dataset} column, "
             f"ran on {run.config.data.name} at scale `{plan.scale}`."]
    metric = next((m for m, st in TABLE_METRIC_STAGE.items() if st == stage), None)
    paper = study.paper.get(cell.dataset, {}).get(cell.setting, {})
    if cell.control:
        lines.append("The random-init control: a randomly initialised encoder, no pre-training; "
                     "the paper reports no such number.")
    elif metric and metric in paper:
        lines.append(f"The paper: {TABLE_METRIC_NAME[metric]} {paper[metric]}.")
    elif paper:
        lines.append("The paper: " + ", ".join(f"{TABLE_METRIC_NAME[m]} {v}" for m, v in paper.items()) + ".")
    if plan.scale != "paper":
        lines.append(f"Not comparable with the paper: scale `{plan.scale}` is not the paper's recipe.")
    if len(run.cells) > 1:
        lines.append("Also serves: " + "; ".join(f"{c.study} {c.label}" for c in run.cells[1:]) + ".")
    return "\n\n".join(lines)
