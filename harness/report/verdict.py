"""Did a cell reproduce the paper? A verdict per cell of a `paper`-scale table, from its seeds.

A cell with n ≥ 2 seeds gets the 95 % interval of its mean, mean ± t(0.975, n−1) · s / √n, and
it reproduced the paper when the paper's value lies inside. s is the sample standard deviation
over the seeds (ddof=1, the `std` that harness.report.tables.collect writes): the t distribution
is that of (mean − μ) / (s / √n) with exactly this s. Student's t and not the normal's 1.96
because a table affords two to five seeds, and s from so few is itself uncertain: t(0.975, 1) is
12.7 and t(0.975, 2) is 4.3, and 1.96 would make the intervals far too narrow and call cells
"not reproduced" on seed noise alone. The paper reports one number without a spread, so it is
taken as a fixed value; a cell can miss it by the paper's own seed noise too, which makes the
test strict rather than lenient.

Only at scale `paper`: the smaller scales do not run the paper's recipe, so a gap to the paper
says nothing about reproducing it, and their tables say nothing about a verdict. A cell without
a paper value (the random-init control, Tables 9 and 10, other methods' reported rows of Table 8)
gets none. With one seed a cell has its difference to the paper but no interval, and the note
says how to ask for seeds.
"""
from __future__ import annotations

import math

import pandas as pd

from harness.report.marks import known

# Added to a table's long form: ours − paper, the 95 % interval of our mean, and "yes"/"no"
# (empty where there is no verdict).
COLUMNS = ["ours_minus_paper", "ci95_low", "ci95_high", "reproduced"]
LEVEL = 0.95

NOT_REPRODUCED_MARK = "✗"
SEEDS_HINT = "`--config 'seeds=[0, 1, 2]'`, or `seeds:` in the study"


def interval(mean: float, std: float, n: int) -> tuple[float, float]:
    """The two-sided LEVEL interval of a mean over n ≥ 2 seeds with sample std `std` (ddof=1)."""
    from scipy.stats import t  # only when a paper-scale table has seeds to judge

    half = t.ppf(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def _judgeable(row) -> bool:
    """A cell of ours, at the paper's scale, with a number of ours and one of the paper's."""
    return row.scale == "paper" and row.source == "this run" and bool(row.n) and known(row.paper)


def judge(long: pd.DataFrame) -> pd.DataFrame:
    """The long table (harness.report.tables.collect) with COLUMNS: for every judgeable cell its
    difference to the paper; with n ≥ 2 seeds also the interval and whether the paper's value lies
    in it."""
    verdicts = []
    for row in long.itertuples():
        if not _judgeable(row):
            verdicts.append((None, None, None, None))
            continue
        diff = row.ours - row.paper
        if row.n < 2:
            verdicts.append((diff, None, None, None))
            continue
        low, high = interval(row.ours, row.std, row.n)
        verdicts.append((diff, low, high, "yes" if low <= row.paper <= high else "no"))
    return long.assign(**{c: pd.Series([v[i] for v in verdicts], index=long.index, dtype=object if c == "reproduced"
                                       else "float64") for i, c in enumerate(COLUMNS)})


def not_reproduced(row) -> bool:
    """The paper's value lies outside the cell's interval."""
    return getattr(row, "reproduced", None) == "no"


def notes(long: pd.DataFrame) -> list[str]:
    """The note under a paper-scale table: how many judged cells reproduced and what ✗ means, or
    that the verdict needs seeds. Nothing at the smaller scales."""
    if "reproduced" not in long or long.empty:
        return []
    judged = long[long["reproduced"].isin(["yes", "no"])]
    one_seed = [r for r in long.itertuples() if _judgeable(r) and r.n == 1]
    out = []
    if len(judged):
        missed = int((judged["reproduced"] == "no").sum())
        text = (f"Reproduced: {len(judged) - missed} of {len(judged)} cells, the paper's value inside our "
                f"{LEVEL * 100:.0f} % interval of the mean over seeds (Student t)")
        text += f"; {NOT_REPRODUCED_MARK} not reproduced, the paper's value outside it." if missed else "."
        if one_seed:
            text += (f" {len(one_seed)} cell{'s have' if len(one_seed) > 1 else ' has'} one seed and no verdict "
                     f"(more seeds: {SEEDS_HINT}).")
        out.append(text)
    elif one_seed:
        out.append(f"No reproduction verdict: with one seed a cell has no interval to hold the paper's value; "
                   f"ask for two or more ({SEEDS_HINT}).")
    return out
