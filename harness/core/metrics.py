"""Metric names, defined once: what the stages log, the tables read and the searches optimize."""
from __future__ import annotations

LOSS = "loss"
LR = "lr"
RESUMED_AT_EPOCH = "resumed_at_epoch"
TABLE_METRIC_STAGE = {"lin": "linprobe", "ft": "finetune"}  # a table's metric -> the stage that reports it
TABLE_METRIC_NAME = {"lin": "LIN", "ft": "FT"}


def acc1(split: str) -> str:
    """Top-1 (%) on an evaluation split: `test`, or `val` (held out of training, for searches)."""
    return f"{split}_acc1"


def best(name: str) -> str:
    return f"best_{name}"


def final(name: str) -> str:
    """The name a stage's result is logged under at its end (one value per run)."""
    return f"final_{name}"
