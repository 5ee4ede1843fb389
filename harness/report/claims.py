"""What a table concludes: each claim of the paper (harness.plan.claims) checked on our runs.

For a comparison of setting A with setting B on one dataset and metric, the effect is A − B,
paired by seed: seeds are shared across settings (the same seed gives the same data order and
initialisation), so the difference within a seed is the unit, not each cell's spread. Over
the n seeds both settings have:

- the mean difference and its 95 % interval, mean ± t(0.975, n−1) · s / √n, s the standard
  deviation of the differences (ddof=1);
- a verdict: **holds** when the interval excludes 0 on the paper's side (A > B for `better_than`;
  for a claim of no gain, `no_better_than`, when it excludes any gain), **reversed** when it
  excludes 0 on the other side, **unresolved** otherwise; with one seed the difference alone and
  **needs seeds**; **not run** without a pair;
- for an unresolved claim, the seeds that would resolve it: the smallest n at which a paired
  two-sided t test at 5 % finds an effect of the paper's size (|paper A − paper B|; our own
  mean where the paper gives no numbers) with 80 % power, at the observed s.

Against another method's published number (Table 8's `reported:`) the effect is our mean − that
number, a one-sample interval of our seeds; it is only judged at scale `paper`, where both are
the same task (elsewhere: **not comparable**).

The marks of the two cells (†: a pre-training that did not learn, ‡: below its random-init
control, §: stale) carry into the comparison. Where two of the paper's datasets ran as one
(at `tiny` and `smoke` every dataset is the stand-in), the comparison is counted once.

A table's claims are rendered under it (harness.report.tables); every table's together by
harness.report.summary (the `claims` target).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.core import metrics as names
from harness.plan.claims import NO_BETTER
from harness.plan.table_plan import TablePlan
from harness.report.latex import tex_text
from harness.report.marks import BELOW_CONTROL_MARK, NOT_LEARNED_MARK, STALE_MARK, below_control, not_learned, stale
from harness.report.verdict import LEVEL, interval

HOLDS, REVERSED, UNRESOLVED, NEEDS_SEEDS, NOT_RUN, NOT_COMPARABLE = (
    "holds", "reversed", "unresolved", "needs seeds", "not run", "not comparable")
POWER = 0.8  # of the seeds-needed estimate
MAX_SEEDS = 1000  # beyond this, "more than 1000"

COLUMNS = ["table", "claim", "statement", "relation", "setting", "other", "paper_dataset", "dataset", "metric",
           "scale", "n", "effect", "sd", "ci95_low", "ci95_high", "verdict", "seeds_needed", "seeds_needed_for",
           "paper_effect", "marks", "same_runs_as", "source"]


@dataclass(frozen=True)
class Effect:
    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    verdict: str
    seeds_needed: int | None = None  # only for an unresolved claim; None also when more than MAX_SEEDS


def seeds_needed(effect: float, sd: float, level: float = LEVEL, power: float = POWER) -> int | None:
    """The smallest number of seeds n ≥ 2 at which a paired two-sided t test at 1 − `level`
    detects a true mean difference `effect` with standard deviation `sd` with the given power
    (non-central t); None past MAX_SEEDS or for no effect."""
    from scipy.stats import nct, t

    if effect == 0 or math.isnan(effect):
        return None
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        crit = t.ppf(0.5 + level / 2, n - 1)
        if nct.sf(crit, n - 1, abs(effect) / (sd / math.sqrt(n))) >= power:
            return n
    return None


def judge(diffs: list[float], relation: str, target: float | None = None) -> Effect:
    """The effect of paired differences `diffs` (A − B, one per seed) for a claim of `relation`
    (better: A > B; no_better: A does not beat B). `target`: the effect the seeds-needed estimate
    aims to resolve (the paper's); default the observed mean."""
    n = len(diffs)
    if n == 0:
        return Effect(0, None, None, None, None, NOT_RUN)
    mean = sum(diffs) / n
    if n == 1:
        return Effect(1, mean, None, None, None, NEEDS_SEEDS)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    low, high = (float(x) for x in interval(mean, sd, n))
    favoured = high < 0 if relation == NO_BETTER else low > 0
    against = low > 0 if relation == NO_BETTER else high < 0
    if favoured or against:
        return Effect(n, mean, sd, low, high, HOLDS if favoured else REVERSED)
    aim = target if target is not None and not math.isnan(target) else mean
    return Effect(n, mean, sd, low, high, UNRESOLVED, seeds_needed(aim, sd))


# --------------------------------------------------------------------------- a table's claims

def per_seed(plan: TablePlan, runs: pd.DataFrame) -> dict[tuple[str, str, str], dict[int, float]]:
    """(paper dataset, setting, metric) -> seed -> value, for every cell of ours that has its result."""
    value_of = runs.set_index("signature")["value"].dropna().to_dict() if len(runs) else {}
    out: dict[tuple[str, str, str], dict[int, float]] = {}
    for cell in plan.cells:
        if cell.control:
            continue
        for metric in plan.study.metrics:
            sig = cell.runs.get(names.TABLE_METRIC_STAGE[metric])
            if sig in value_of:
                out.setdefault((cell.dataset, cell.setting, metric), {})[cell.seed] = value_of[sig]
    return out


def _marks(rows: list) -> str:
    """The marks of either cell, each once, in the tables' order (†, ‡, §)."""
    tests = ((NOT_LEARNED_MARK, not_learned), (BELOW_CONTROL_MARK, below_control), (STALE_MARK, stale))
    return "".join(mark for mark, test in tests if any(row is not None and row.n and test(row) for row in rows))


def check(plan: TablePlan, runs: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison, paper dataset and metric (COLUMNS), from the runs' values and the
    table's long form (harness.report.tables.collect), whose marks it carries."""
    study = plan.study
    values = per_seed(plan, runs)
    sigs = {(c.dataset, c.setting, m): c.runs.get(names.TABLE_METRIC_STAGE[m]) for c in plan.cells
            if not c.control for m in study.metrics}
    ran = {c.dataset: c.config.data.name for c in plan.cells}
    applies = {(c.dataset, c.setting, m) for c in plan.cells for m in study.metrics
               if names.TABLE_METRIC_STAGE[m] in c.runs}  # Table 7's supervised row has no linear probe
    row_of = {(r.paper_dataset, r.setting, r.metric): r for r in long.itertuples()}
    rows, seen = [], {}
    for comp in study.claims:
        for dataset in comp.datasets:
            for metric in comp.metrics:
                label = names.TABLE_METRIC_NAME[metric]
                mine = values.get((dataset, comp.setting, metric), {})
                fixed = study.reported.get(dataset, {}).get(comp.other, {}).get(metric)
                reported = comp.other in study.reported.get(dataset, {})
                paper_a = study.paper.get(dataset, {}).get(comp.setting, {}).get(metric)
                paper_b = fixed if reported else study.paper.get(dataset, {}).get(comp.other, {}).get(metric)
                paper_effect = paper_a - paper_b if paper_a is not None and paper_b is not None else None
                if (reported and fixed is None) or (dataset, comp.setting, metric) not in applies or (
                        not reported and (dataset, comp.other, metric) not in applies):
                    continue  # a metric one side does not have: no published number, or no such stage
                if reported:
                    diffs = [v - fixed for _, v in sorted(mine.items())]
                else:
                    theirs = values.get((dataset, comp.other, metric), {})
                    diffs = [mine[s] - theirs[s] for s in sorted(mine.keys() & theirs.keys())]
                effect = judge(diffs, comp.relation, paper_effect)
                verdict = effect.verdict
                if reported and plan.scale != "paper" and effect.n:
                    verdict = NOT_COMPARABLE
                key = (comp.statement, metric, sigs.get((dataset, comp.setting, metric)),
                       "reported" if reported else sigs.get((dataset, comp.other, metric)))
                same = seen.setdefault(key, dataset) if None not in key[2:] else dataset
                marks = _marks([row_of.get((dataset, comp.setting, label)),
                                None if reported else row_of.get((dataset, comp.other, label))])
                rows.append({"table": study.table, "claim": comp.claim, "statement": comp.statement,
                             "relation": comp.relation, "setting": comp.setting, "other": comp.other,
                             "paper_dataset": dataset, "dataset": ran.get(dataset, dataset), "metric": label,
                             "scale": plan.scale, "n": effect.n, "effect": effect.mean, "sd": effect.sd,
                             "ci95_low": effect.low, "ci95_high": effect.high, "verdict": verdict,
                             "seeds_needed": effect.seeds_needed if verdict == UNRESOLVED else None,
                             "seeds_needed_for": ("paper" if paper_effect is not None else "ours")
                             if verdict == UNRESOLVED else "",
                             "paper_effect": paper_effect, "marks": marks,
                             "same_runs_as": "" if same == dataset else same, "source": comp.source})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"seeds_needed": "Int64"})


COUNTED = [HOLDS, REVERSED, UNRESOLVED, NEEDS_SEEDS]


def count(frame: pd.DataFrame) -> str:
    """The one-line count: "at smoke, 3 seeds: 9 hold, 1 reversed, 4 unresolved of 14" (one part per
    scale); comparisons of one set of runs counted once."""
    if frame.empty:
        return "no claims checked yet"
    parts = []
    for scale, of_scale in frame[frame["same_runs_as"] == ""].groupby("scale", sort=False):
        judged = of_scale[of_scale["verdict"].isin(COUNTED)]
        seeds = sorted(set(judged["n"]))
        seeds_text = "no runs" if not seeds else (f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}" if len(seeds) == 1
                                                  else f"{seeds[0]}–{seeds[-1]} seeds")
        tally = judged["verdict"].value_counts()
        words = {HOLDS: "hold" if tally.get(HOLDS, 0) != 1 else "holds", REVERSED: "reversed",
                 UNRESOLVED: "unresolved", NEEDS_SEEDS: "need seeds" if tally.get(NEEDS_SEEDS, 0) != 1 else "needs seeds"}
        text = ", ".join(f"{tally.get(v, 0)} {words[v]}" for v in COUNTED[:3])
        if tally.get(NEEDS_SEEDS, 0):
            text += f", {tally[NEEDS_SEEDS]} {words[NEEDS_SEEDS]} (one seed)"
        text = f"at {scale}, {seeds_text}: {text} of {len(judged)}" if len(judged) else f"at {scale}: none judged"
        rest = of_scale[~of_scale["verdict"].isin(COUNTED)]["verdict"].value_counts()
        if len(rest):
            text += " (" + ", ".join(f"{k} {v}" for k, v in rest.items()) + ")"
        parts.append(text)
    return "; ".join(parts)


# --------------------------------------------------------------------------- text

def signed(value, digits: int = 1) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def folded(frame: pd.DataFrame) -> list[dict]:
    """The comparisons as a reader sees them: one row per set of runs, the paper's datasets that
    share them named together, their paper effects side by side."""
    out: dict[tuple, dict] = {}
    for row in frame.to_dict("records"):
        key = (row["statement"], row["metric"], row["same_runs_as"] or row["paper_dataset"])
        if key in out:
            shown = out[key]
            shown["paper_dataset"] += f" · {row['paper_dataset']}"
            shown["paper_text"] += f" · {signed(row['paper_effect'], 2)}"
            shown["needed_text"] += f" · {_needed(row)}" if row["verdict"] == UNRESOLVED else ""
        else:
            out[key] = {**row, "paper_text": signed(row["paper_effect"], 2), "needed_text": _needed(row)}
    return list(out.values())


def _needed(row: dict) -> str:
    if row["verdict"] != UNRESOLVED:
        return ""
    n = row["seeds_needed"]
    text = f"> {MAX_SEEDS}" if n is None or pd.isna(n) else str(int(n))
    return text + ("" if row["seeds_needed_for"] == "paper" else "*")


def interval_text(row: dict) -> str:
    if row["ci95_low"] is None or pd.isna(row["ci95_low"]):
        return "—"
    return f"[{row['ci95_low']:+.1f}, {row['ci95_high']:+.1f}]"


def lines(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and notes of a claims table, as plain text for Markdown and LaTeX."""
    header = ["claim", "metric", "dataset", "ours: A − B (n)", "95 % CI", "paper", "verdict", "seeds needed"]
    rows, shown = [], folded(frame)
    stand_in = {r["dataset"] for r in shown} - {d for r in shown for d in r["paper_dataset"].split(" · ")}
    one_stand_in = len({r["dataset"] for r in shown}) == 1 and stand_in  # said once, in the notes
    for r in shown:
        ran = r["dataset"] if r["dataset"] not in r["paper_dataset"].split(" · ") and not one_stand_in else ""
        ours = "—" if r["n"] == 0 else f"{signed(r['effect'])} ({r['n']}){r['marks']}"
        rows.append([f"[{r['claim']}] {r['statement']}", r["metric"],
                     r["paper_dataset"] + (f" (ran {ran})" if ran else ""), ours, interval_text(r),
                     r["paper_text"], r["verdict"], r["needed_text"]])
    sources = dict.fromkeys(f"[{c}] {s}" for c, s in zip(frame["claim"], frame["source"]))
    notes = [f"Claims of the paper, each the difference A − B of two settings paired by seed, its mean over n seeds "
             f"and {LEVEL * 100:.0f} % interval (Student t). Verdict: holds when the interval excludes 0 on the "
             f"paper's side, reversed on the other, unresolved otherwise; needs seeds with one seed. ≯: a claim of no "
             f"gain. Seeds needed: seeds at which the paper's effect (* ours, where the paper gives none) would be found "
             f"with {POWER * 100:.0f} % power at the observed spread of the differences (no more than the seeds run: the "
             f"paper's effect would likely have shown, so ours is smaller).",
             f"Count: {count(frame)}.", *sources]
    if one_stand_in:
        notes.insert(1, f"Every comparison ran on {stand_in.pop()}, which stands in for the paper's datasets at "
                        f"this scale; the paper's columns that ran as one are counted once.")
    if frame["marks"].str.len().gt(0).any():
        notes.append("A mark on ours (†, ‡, §) is carried from either cell of the comparison (see the table's notes).")
    if (frame["verdict"] == NOT_COMPARABLE).any():
        notes.append(f"{NOT_COMPARABLE}: against another method's published number, judged only at scale `paper`.")
    return header, rows, notes


def markdown(frame: pd.DataFrame, heading: str = "Claims") -> str:
    header, rows, notes = lines(frame)
    table = pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True)
    return f"**{heading}.**\n\n{table}\n\n" + "\n\n".join(notes) + "\n"


def latex(frame: pd.DataFrame, label: str, title: str) -> str:
    """The claims as a booktabs table of their own, under the table's (label tab:<table>-claims)."""
    header, rows, notes = lines(frame)
    out = [r"\begin{table}[t]", r"\centering", r"\footnotesize", rf"\caption{{{tex_text(title)}}}",
           rf"\label{{tab:{label}-claims}}",
           r"\begin{tabular}{lllrrrlr}", r"\toprule",
           " & ".join(tex_text(h) for h in header) + r" \\", r"\midrule"]
    # "{}" first: a row opening with "[1]" after \\ would read as \\'s optional argument
    out += ["{}" + " & ".join(tex_text(c) for c in row) + r" \\" for row in rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
            rf"\parbox{{\linewidth}}{{{tex_text(' '.join(notes))}}}", r"\end{table}"]
    return "\n".join(out) + "\n"
