"""Preflight, in the job: the stage runs of one job, each trained for warmup + steps steps in a
throw-away folder, its step rates and peak memory measured (harness.run.preflight)."""
from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from harness.core.config import RunConfig


class PreflightSettings(BaseModel):
    """`--config preflight=true` or `preflight={steps: 20, warmup: 3}`: steps measured per stage
    run after `warmup` steps left out of the rates (compilation, allocator, autotuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(20, gt=0)
    warmup: int = Field(3, ge=0)

    @classmethod
    def of(cls, value: Any) -> "PreflightSettings | None":
        if value in (None, False, "false", "False", 0):
            return None
        return cls() if value in (True, "true", "True", 1) else cls.model_validate(value)


@dataclass
class Probe:
    """One stage run to preflight: what it is and the config it runs with."""

    stage: str
    signature: str
    label: str  # the first cell asking for it, e.g. "table3 · square M=2 · s0"
    config: dict  # the run's resolved config (JSON)


class StepMeter:
    """Timestamps of a stage's steps, given by the training loop (`ctx.meter`): when the batch
    reached the device (`fetched`) and when the optimizer step ended (`stepped`). Full once
    `warmup + steps` steps are done: the stage is then asked to stop. The loop also hands it the
    stage's `evaluation` (top-1 on the evaluation split, run after every epoch), timed once
    after the steps (`time_evaluation`)."""

    def __init__(self, device, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.fetch_t: list[float] = []
        self.step_t: list[float] = []
        self.losses: list[float] = []
        self.evaluation: Callable[[], float] | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def fetched(self) -> None:
        self.fetch_t.append(self._now())

    def stepped(self, loss) -> None:
        self.step_t.append(self._now())
        self.losses.append(float(loss.detach().float().item()))

    def full(self) -> bool:
        return len(self.step_t) >= self.warmup + self.steps

    def setup_s(self, started: float) -> float | None:
        """Seconds from the stage's start (`started`, a perf_counter time) to its first batch on
        the device: what a full run spends once (building the model and the data, features
        extracted for a cached-feature probe, data moved to the device)."""
        return self.fetch_t[0] - started if self.fetch_t else None

    def time_evaluation(self) -> float | None:
        """Seconds of one evaluation of the stage, None for a stage without one."""
        if self.evaluation is None:
            return None
        start = self._now()
        self.evaluation()
        return self._now() - start

    def rates(self, batch: int) -> tuple[int, float | None, float | None]:
        """(steps measured, images/s of the whole step, images/s of the compute alone). A whole
        step runs from the end of the step before (data fetched, then computed); the first step
        has no step before, so it is never measured."""
        first = max(self.warmup, 1)
        whole = [b - a for a, b in zip(self.step_t[first - 1:], self.step_t[first:])]
        compute = [s - f for f, s in zip(self.fetch_t[first:], self.step_t[first:])]
        if not whole:
            return 0, None, None
        return len(whole), batch * len(whole) / sum(whole), batch * len(compute) / sum(compute)


class MemoryWatch:
    """Peak memory while a stage run trains: CUDA's max_memory_allocated against the device's
    memory; on the CPU the process's peak resident set (sampled every 20 ms) against the job's
    memory (the executor's mem_gb, else the machine's)."""

    def __init__(self, device, limit_gb: float | None):
        self.device, self.limit_gb, self.peak = device, limit_gb, 0
        self._stop = threading.Event()

    def __enter__(self) -> "MemoryWatch":
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, me.memory_info().rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            import torch

            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()

    def capacity(self) -> int:
        if self.device.type == "cuda":
            import torch

            return torch.cuda.get_device_properties(self.device).total_memory
        import psutil

        machine = psutil.virtual_memory().total
        return min(machine, int(self.limit_gb * 2**30)) if self.limit_gb else machine


def measure(probe: Probe, settings: PreflightSettings, world_size: int, limit_gb: float | None) -> dict[str, Any]:
    """Train `probe`'s stage for warmup + steps steps in a throw-away folder; its measurements."""
    import torch

    from harness.core.layout import RunFolder
    from harness.run.preflight.context import NoCheckpoint, PreflightContext
    from harness.science import methods

    cfg = per_device(methods.validate(probe.config), probe.stage, world_size)
    batch = getattr(cfg, probe.stage).batch_size
    record: dict[str, Any] = {"signature": probe.signature, "stage": probe.stage, "status": "ok", "error": "",
                              "batch_per_device": batch}
    with tempfile.TemporaryDirectory(prefix="preflight-") as tmp:
        ctx = PreflightContext(cfg, RunFolder(Path(tmp) / probe.signature), checkpoint=NoCheckpoint(Path(tmp)),
                               name=f"preflight {probe.stage} {probe.signature}")
        device = ctx.device
        meter = StepMeter(device, settings.warmup, settings.steps)
        ctx.meter, ctx.stop = meter, meter.full
        watch = MemoryWatch(device, limit_gb)
        started = time.perf_counter()
        error, eval_s = train(probe.stage, ctx, meter, watch)
        if error:
            record.update(status="failed", error=error)
        record.update(setup_s=meter.setup_s(started), eval_s=eval_s)
        record.update(seconds=time.perf_counter() - started, device=device_name(device),
                      peak_mem_gb=watch.peak / 2**30, capacity_gb=watch.capacity() / 2**30,
                      losses=meter.losses)
        steps, whole, compute = meter.rates(batch)
        record.update(steps=steps, step_img_s=whole, compute_img_s=compute)
        if record["status"] == "ok" and not steps:
            record.update(status="failed", error=f"no step measured: the stage ran {len(meter.step_t)} step(s); "
                                                 f"lower preflight.warmup or raise the data's size")
    del ctx
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def train(stage: str, ctx, meter: "StepMeter", watch: "MemoryWatch") -> tuple[str, float | None]:
    """Run the stage until the meter is full, then time one evaluation (its memory counts in the
    peak too): (the failure's one line or "", the evaluation's seconds)."""
    from harness.core.errors import StageStopped
    from harness.run.launch import error_line
    from harness.run.runner import stage_module

    eval_s = None
    try:
        with watch:
            try:
                metrics = stage_module(stage).run(ctx)
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}  # a stage shorter than the preflight
                if bad:
                    raise FloatingPointError(f"final metrics not finite: {bad}")
            except StageStopped:
                pass  # asked to stop once the meter was full: what a preflight wants
            eval_s = meter.time_evaluation()
    except Exception as err:  # noqa: BLE001 -- every failure is this run's one line
        return error_line(err)[:300], eval_s
    return "", eval_s


def per_device(cfg: RunConfig, stage: str, world_size: int) -> RunConfig:
    """The config one process of a `world_size`-process run trains with: its share of the batch."""
    section = getattr(cfg, stage)
    if world_size == 1:
        return cfg
    return cfg.model_copy(update={stage: section.model_copy(update={"batch_size": section.batch_size // world_size})})


def device_name(device) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores visible, {_threads()} threads)"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


class PreflightJob:
    """What one preflight job runs: its probes one after another, each record appended to
    `records` as it is measured (so that a job killed half-way, out of memory say, still tells
    which runs it measured)."""

    def __init__(self, probes: list[Probe], settings: PreflightSettings, world_size: int, limit_gb: float | None,
                 records: str, threads: int | None):
        self.probes, self.settings, self.world_size = probes, settings, world_size
        self.limit_gb, self.records, self.threads = limit_gb, records, threads

    def __call__(self) -> list[dict]:
        from harness.stages import engine

        engine.set_threads(self.threads)
        out = []
        for probe in self.probes:
            print(f"[preflight] {probe.stage} {probe.signature} ({probe.label}) ...", flush=True)
            record = measure(probe, self.settings, self.world_size, self.limit_gb)
            print(f"[preflight] {probe.stage} {probe.signature}: {record['status']} {record['error']}".rstrip(),
                  flush=True)
            with open(self.records, "a") as f:
                f.write(json.dumps(record) + "\n")
            out.append(record)
        return out
