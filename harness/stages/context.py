"""What a stage runs with besides its own code: one bundle, the same for every stage."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from harness.core.catalog import DatasetInfo, dataset_info
from harness.core.config import RunConfig
from harness.core.files import write_text_atomic
from harness.core.layout import RunFolder
from harness.science import methods
from harness.science.methods.base import Method
from harness.science.encoder import Encoder
from harness.stages import data
from harness.stages.checkpoint import Checkpoint
from harness.stages.distributed import SINGLE, Dist
from harness.stages.engine import select_device


class Tracker(Protocol):
    """Who records a stage (an MLflow run, or a test's recorder)."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def log_input(self, name: str, digest: str, source: str, profile: dict) -> None: ...


@dataclass
class StageContext:
    """A stage's config, its run folder (checkpoint, encoder), the pre-training run it reads
    (`parent`, evaluation stages), who records it (rank 0 only) and its processes."""

    cfg: RunConfig
    run: RunFolder
    tracker: Tracker | None = None
    parent: RunFolder | None = None
    dist: Dist = SINGLE
    checkpoint: Checkpoint = field(default=None)  # default: the run folder's
    name: str = ""  # what its progress lines call it, e.g. "M=2 · pretrain · s0 · table3"
    stop: Callable[[], bool] | None = None  # asked after every step: stop there (preemption, time limit)
    meter: Any = None  # told when each step's batch is on the device and when its step ends (a preflight's timer)
    startup_s: float | None = None  # set by the first training step: seconds since the process started

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            self.checkpoint = Checkpoint(self.run.checkpoint)

    @cached_property
    def device(self) -> torch.device:
        return select_device(self.cfg)

    @cached_property
    def info(self) -> DatasetInfo:
        return dataset_info(self.cfg.data.name)

    def method(self) -> Method:
        return methods.method(self.cfg.method)(self.cfg)

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.dist.is_main and self.tracker is not None:
            self.tracker.log(metrics, step=step)

    def say(self, text: str) -> None:
        """One line to the job's log (rank 0), named as its progress lines are; the launcher echoes it."""
        if self.dist.is_main:
            print(f"[{self.name or self.run.signature}] {text}", flush=True)

    def progress(self, progress) -> None:
        """One line per epoch to the job's log, and the run folder's progress.json (rank 0)."""
        if not self.dist.is_main:
            return
        print(progress.line(self.name or self.run.signature), flush=True)
        write_text_atomic(self.run.progress, json.dumps({**asdict(progress), "time": time.time()}))

    def log_artifact(self, path: Path) -> None:
        if self.dist.is_main and self.tracker is not None:
            self.tracker.log_artifact(path)

    def splits(self, train_transform, eval_transform):
        """The stage's (training set, evaluation set, its split name), logged as its MLflow input."""
        train, evaluation, split = data.splits(self.cfg, train_transform, eval_transform)
        if self.dist.is_main and self.tracker is not None:
            self.tracker.log_input(**data.describe(self.cfg, train, evaluation, split))
        return train, evaluation, split

    def initial_encoder(self, drop_path: float = 0.0) -> Encoder:
        """The encoder an evaluation stage starts from, as its method says: the one its
        pre-training run saved, or a random one. Its position encodings are those of the
        pre-training resolution, interpolated when evaluation runs at another size."""
        encoder = Encoder(self.cfg.model, self.cfg.data.image_size, self.info.channels, drop_path=drop_path)
        return self.method().initial_encoder(encoder, self.parent)
