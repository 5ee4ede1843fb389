"""Preflight, its report: each stage run's measurement projected onto its full run (setup + epochs
x (images / rate + one evaluation), x devices), the table printed and written
(results/preflight/<target>.md|.csv), and the bill before a target runs, from the newest reports
(`projected`)."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.catalog import dataset_info
from harness.core.config import RunConfig
from harness.core.metrics import hms
from harness.run.executor import ExecutorConfig
from harness.run.preflight.probe import PreflightSettings


def devices(executor: ExecutorConfig) -> int:
    """What a full run's job holds, in devices: its GPUs, or its nodes when it asks for none."""
    return executor.nodes * (executor.gpus_per_node or 1)


def train_images(cfg: RunConfig, stage: str) -> int:
    """Images a stage trains on per epoch (the dataset's training split, its held-out share and
    subset applied; whole batches only)."""
    n = dataset_info(cfg.data.name).train_size
    if cfg.data.validation:
        n -= int(n * cfg.data.validation)
    if cfg.data.train_subset:
        n = min(n, cfg.data.train_subset)
    batch = min(getattr(cfg, stage).batch_size, n)
    return n // batch * batch


def project(record: dict, cfg: RunConfig, executor: ExecutorConfig) -> dict:
    """The full run from the measurements: its one-off setup, then per epoch its training images
    / (step rate x processes) and one evaluation; x devices. Assumes the processes of a
    data-parallel run scale perfectly (each evaluates the whole split, as the stages do)."""
    stage = record["stage"]
    epochs = getattr(cfg, stage).epochs
    images = train_images(cfg, stage)
    out = {"epochs": epochs, "train_images": images, "devices": devices(executor),
           "wall_h": None, "device_h": None}
    if record.get("step_img_s"):
        world = executor.tasks_per_node * executor.nodes
        epoch_s = images / (record["step_img_s"] * world) + (record.get("eval_s") or 0.0)
        out["wall_h"] = ((record.get("setup_s") or 0.0) + epochs * epoch_s) / 3600
        out["device_h"] = out["wall_h"] * out["devices"]
    return out


@dataclass
class Report:
    target: str
    executor: ExecutorConfig
    settings: PreflightSettings
    rows: list[dict] = field(default_factory=list)
    folder: Path | None = None  # the jobs' logs and records, and a copy of the report
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]

    def total_device_h(self) -> float:
        return sum(r["device_h"] or 0.0 for r in self.rows)

    def where(self) -> str:
        e = self.executor
        return (f"{e.kind}" + (f" partition {e.partition}" if e.partition else "") +
                f", {e.nodes} node(s) x {e.tasks_per_node} task(s) x {e.cpus_per_task} CPUs, "
                f"{e.gpus_per_node} GPU(s)/node" + (f", {e.mem_gb:g} GB" if e.mem_gb else ""))

    def columns(self) -> list[str]:
        return ["target", "stage", "signature", "measured_as", "cell", "dataset", "model", "image_size", "batch_per_device",
                "status", "error", "steps", "step_img_s", "compute_img_s", "setup_s", "eval_s", "peak_mem_gb",
                "capacity_gb", "device", "epochs", "train_images", "devices", "wall_h", "device_h", "executor", "measured"]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns(), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({**{k: _fmt_csv(v) for k, v in r.items()}, "target": self.target,
                        "executor": self.where(), "measured": self.when})
        return buf.getvalue()

    def markdown(self) -> str:
        measured = sum(1 for r in self.rows if not r.get("measured_as"))
        lines = [f"# Preflight of {self.target}", "",
                 f"{self.when}; {len(self.rows)} stage runs, {measured} measured (up to {self.settings.steps} steps "
                 f"each after {self.settings.warmup} warm-up, fewer where a run's epoch is shorter: the column "
                 f"steps; a run that computes as another one, \"as <run>\", shares its measurement); executor: "
                 f"{self.where()}.", "",
                 "| stage | run | cell | model · data | batch/dev | status | steps | img/s step | img/s compute "
                 "| peak mem | full run | device-h |",
                 "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            mem = f"{r['peak_mem_gb']:.1f} / {r['capacity_gb']:.0f} GB" if r.get("peak_mem_gb") is not None else "—"
            status = "ok" if r["status"] == "ok" else f"**failed**: {r['error']}"
            status += f" (as {r['measured_as']})" if r.get("measured_as") else ""
            lines.append(f"| {r['stage']} | {r['signature']} | {r['cell']} | {r['model']} · {r['dataset']} "
                         f"{r['image_size']} px | {r['batch_per_device']} | {status} | {r.get('steps') or '—'} | "
                         f"{_num(r.get('step_img_s'))} | "
                         f"{_num(r.get('compute_img_s'))} | {mem} | {r['epochs']} ep, "
                         f"{hms(r['wall_h'] * 3600) if r.get('wall_h') else '—'} | {_num(r.get('device_h'), 2)} |")
        lines += ["", f"**Total: {self.total_device_h():,.1f} device-hours** projected for the full runs of "
                      f"{self.target} ({len(self.rows) - len(self.failed)} ok, {len(self.failed)} failed) on "
                      f"this executor; a full run is its one-off setup (data, model, a probe's cached features), "
                      f"then per epoch its steps at the measured rate and one evaluation (setup_s, eval_s in the "
                      f"CSV); data-parallel processes assumed to scale perfectly; "
                      f"{self.rows[0]['device'] if self.rows else ''}."]
        return "\n".join(lines) + "\n"


def _num(v, digits: int = 0) -> str:
    """A rate or an amount as the report prints it; under 10, with two decimals (CPU rates)."""
    if v is None:
        return "—"
    return f"{v:,.{max(digits, 2)}f}" if abs(v) < 10 else f"{v:,.{digits}f}"


def _fmt_csv(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def describe_model(cfg: RunConfig) -> str:
    m = cfg.model
    return f"ViT {m.embed_dim}x{m.depth}/{m.patch_size}"


def write(report: Report, md: Path, table_csv: Path) -> None:
    from harness.core.files import write_text_atomic

    md.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(md, report.markdown())
    write_text_atomic(table_csv, report.csv())



def preflight_rows(results) -> dict[str, dict]:
    """signature -> its row in the newest preflight report that measured it (ok rows only)."""
    newest: dict[str, dict] = {}
    reports = [p for p in results.preflights.glob("*.csv") if not p.name.endswith(".failed.csv")] \
        if results.preflights.exists() else []  # a failed preflight's report is not the last good one
    for path in reports:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("status") == "ok" and row.get("device_h"):
                    old = newest.get(row["signature"])
                    if old is None or row["measured"] > old["measured"]:
                        newest[row["signature"]] = row
    return newest


def projected(runs: dict, results, executor: ExecutorConfig, target: str = "all") -> str:
    """One or two lines: the device-hours of the unfinished `runs` (signature -> StageRun) as the
    last preflight on `executor` projects them, and what is not measured."""
    where = Report(target, executor, PreflightSettings()).where()
    todo = [sig for sig, r in runs.items() if not results.run(sig).result(r.stage).exists()]
    if not todo:
        return f"[harness] bill: every run of {target} is done; nothing left to spend"
    rows = preflight_rows(results)
    here = {sig: rows[sig] for sig in todo if sig in rows and rows[sig]["executor"] == where}
    hint = "measure with the same snakemake command and --config preflight=true (report in results/preflight/)"
    if not here:
        return (f"[harness] bill: {len(todo)} unfinished runs of {target}; no preflight measured them on this "
                f"executor ({where}): {hint}")
    hours = sum(float(r["device_h"]) for r in here.values())
    when = max(r["measured"] for r in here.values())
    line = (f"[harness] bill: {len(todo)} unfinished runs of {target}: {hours:,.1f} device-hours projected for "
            f"{len(here)} of them by the preflight of {when} ({where})")
    missing = len(todo) - len(here)
    return line + (f"; {missing} not measured on this executor: {hint}" if missing else "")
