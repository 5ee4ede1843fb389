"""Metric names, defined once: what the stages log, the tables read and the searches optimize."""
from __future__ import annotations

from harness.core.stages import BY_METRIC

LOSS = "loss"
LOSS_FLOOR = "loss_floor"  # the loss of the model that learned nothing (pixel methods: an all-zero prediction)
LOSS_RATIO = "loss_ratio"  # loss / loss_floor: near 1, pre-training has learned nothing
NOT_LEARNED_RATIO = 0.9  # a pre-training that ends at or above this ratio is marked in the tables
LR = "lr"
RESUMED_AT_EPOCH = "resumed_at_epoch"
TABLE_METRIC_STAGE = {m: s.name for m, s in BY_METRIC.items()}  # a table's metric -> the stage that reports it
TABLE_METRIC_NAME = {m: s.label for m, s in BY_METRIC.items()}


def acc1(split: str) -> str:
    """Top-1 (%) on an evaluation split: `test`, or `val` (held out of training, for searches)."""
    return f"{split}_acc1"


def best(name: str) -> str:
    return f"best_{name}"


def key(stage: str, name: str) -> str:
    """The MLflow key of a stage's metric: `<stage>/<name>`, one chart section per stage."""
    return f"{stage}/{name}"


def final(name: str) -> str:
    """The name a stage's result is logged under at its end (one value per run)."""
    return f"final_{name}"


def hms(seconds: float) -> str:
    """A duration as progress lines and status print it: h:mm:ss."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
