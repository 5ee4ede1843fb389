"""The marks a table and its figure put on a cell, and the notes that explain them under it.

A row is one line of a table's long form (harness.report.tables.collect): `n` (seeds with a number),
`ours` (their mean), `pretrain_ratio` (the largest final loss / floor of the cell's pre-training
runs), `control` (the mean of the cell's own random-init control over the same seeds) and
`stale` (the modules changed since the code of the runs the cell is built from, space-separated;
empty when none, harness.plan.stale).
"""
from __future__ import annotations

import pandas as pd

from harness.core.metrics import NOT_LEARNED_RATIO

NOT_LEARNED_MARK = "†"
NOT_LEARNED_NOTE = (f"{NOT_LEARNED_MARK} pre-training did not learn (loss ≥ {NOT_LEARNED_RATIO} × floor, "
                    f"the loss of predicting nothing).")

BELOW_CONTROL_MARK = "‡"
BELOW_CONTROL_NOTE = (f"{BELOW_CONTROL_MARK} below its random-init control: at this scale the pre-training "
                      f"left the encoder worse than a random one for this metric.")


def known(value) -> bool:
    """A number is there: neither None nor NaN."""
    return value is not None and not pd.isna(value)


def not_learned(row) -> bool:
    """The cell's pre-training ended at or above NOT_LEARNED_RATIO × its loss floor."""
    return known(row.pretrain_ratio) and row.pretrain_ratio >= NOT_LEARNED_RATIO


def below_control(row) -> bool:
    """A cell whose number (mean over seeds) is under its own control's (same encoder, recipe, seeds)."""
    return bool(row.n) and known(row.control) and row.ours < row.control


STALE_MARK = "§"


def stale_note(modules: list[str]) -> str:
    """What § means, naming the modules changed since the marked cells' runs were made."""
    return (f"{STALE_MARK} stale: built from runs made by other code than today's ({', '.join(modules)} changed "
            f"since); `python -m harness.status` lists them, `--config rerun=stale` redoes them.")


def stale_modules(row) -> list[str]:
    """The modules whose change makes the cell stale (none: not stale)."""
    return row.stale.split() if bool(row.n) and isinstance(row.stale, str) else []


def stale(row) -> bool:
    """A cell with a number built from a run made by other code than today's, or reading one."""
    return bool(stale_modules(row))

