"""What a stage runs with besides its own code: one bundle, the same for every stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from harness.core.catalog import DatasetInfo, dataset_info
from harness.core.config import RunConfig
from harness.core.layout import RunFolder
from harness.science import methods
from harness.science.methods.base import Method
from harness.science.model import Encoder
from harness.stages.checkpoint import Checkpoint
from harness.stages.distributed import SINGLE, Dist
from harness.stages.engine import select_device


class Tracker(Protocol):
    """Who records a stage (an MLflow run, or a test's recorder)."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...


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
        return methods.load(self.cfg.method)(self.cfg)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.dist.is_main and self.tracker is not None:
            self.tracker.log(metrics, step=step)

    def log_artifact(self, path: Path) -> None:
        if self.dist.is_main and self.tracker is not None:
            self.tracker.log_artifact(path)

    def initial_encoder(self, drop_path: float = 0.0) -> Encoder:
        """The encoder an evaluation stage starts from, as its method says: the one its
        pre-training run saved, or a random one. Its position encodings are those of the
        pre-training resolution, interpolated when evaluation runs at another size."""
        encoder = Encoder(self.cfg.model, self.cfg.data.image_size, self.info.channels, drop_path=drop_path)
        return self.method().initial_encoder(encoder, self.parent)
