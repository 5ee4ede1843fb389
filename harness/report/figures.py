"""A figure per table, beside its Markdown, LaTeX and CSV: results/tables/<table>.png and .pdf.

One panel per metric (LIN, FT) and per paper's dataset; each cell of the paper a pair of bars,
ours (error bar: std over seeds) and the paper's (hatched); other methods' reported numbers as
hatched bars alone; the random-init control a dashed reference line, not a bar; a cell whose
pre-training did not learn carries the table's mark (†) over its bar, a cell below its random-init
control the mark ‡, a cell (or control) built from runs of other code than today's the mark §, the
note under the figure naming the modules that changed.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.report.marks import (BELOW_CONTROL_MARK, BELOW_CONTROL_NOTE, NOT_LEARNED_MARK,  # noqa: E402
                                  NOT_LEARNED_NOTE, STALE_MARK, below_control, not_learned, stale, stale_modules,
                                  stale_note)

OURS, PAPER, CONTROL = "#1f77b4", "#bbbbbb", "#d62728"


def draw(study, long: pd.DataFrame, heading: str, *outs: Path) -> list[Path]:
    """Draw the long table of `study` (harness.report.tables.collect) into each of `outs`: what is drawn
    comes from the long table's columns alone."""
    datasets = list(dict.fromkeys(long["paper_dataset"]))
    metrics = list(dict.fromkeys(long["metric"]))
    width = max(7.0, 1.1 * long["setting"].nunique() * len(datasets))
    fig, axes = plt.subplots(len(metrics), len(datasets), squeeze=False, sharey=True, figsize=(width, 1.0 + 2.9 * len(metrics)))
    marked = {}  # mark -> its note, for the marks drawn
    stale_marks = {STALE_MARK: stale_note(sorted({m for r in long.itertuples() for m in stale_modules(r)}))}
    for (i, metric), (j, dataset) in ((m, d) for m in enumerate(metrics) for d in enumerate(datasets)):
        ax = axes[i, j]
        rows = long[(long.metric == metric) & (long.paper_dataset == dataset)]
        cells, control = rows[rows.source != "control"], rows[rows.source == "control"]
        x = np.arange(len(cells))
        ours = cells["ours"].astype(float).to_numpy()
        std = cells["std"].astype(float).fillna(0).to_numpy()
        ax.bar(x - 0.2, np.nan_to_num(ours), 0.4, yerr=std if std.any() else None, color=OURS, label="ours",
               capsize=3)
        ax.bar(x + 0.2, cells["paper"].astype(float).fillna(0).to_numpy(), 0.4, color=PAPER, hatch="//",
               edgecolor="#777777", label="paper")
        for k, row in enumerate(cells.itertuples()):
            marks = {NOT_LEARNED_MARK: NOT_LEARNED_NOTE} if row.n and not_learned(row) else {}
            marks |= {BELOW_CONTROL_MARK: BELOW_CONTROL_NOTE} if below_control(row) else {}
            marks |= stale_marks if stale(row) else {}
            if marks:
                ax.text(k - 0.2, ours[k] + std[k] + 1, "".join(marks), ha="center", fontsize=11)
                marked |= marks
        for c in control.itertuples():  # one control: a line across; one per encoder: over its cells
            if not c.n:
                continue
            if stale(c):  # at the line's right end
                ax.text(len(cells) - 0.5, c.ours + 1, STALE_MARK, ha="right", color=CONTROL, fontsize=11)
                marked |= stale_marks
            own = [k for k, setting in enumerate(cells["setting"]) if f"({setting})" in c.setting]
            if len(control) == 1 or not own:
                ax.axhline(c.ours, color=CONTROL, linestyle="--", linewidth=1.2, label="random init")
            for k in own if len(control) > 1 else []:
                ax.hlines(c.ours, k - 0.45, k + 0.45, color=CONTROL, linestyle="--", linewidth=1.5,
                          label="random init (its encoder)")
        ax.set_xticks(x, [s.replace("->", "→") for s in cells["setting"]], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"{metric} · {dataset}" if len(datasets) > 1 else metric, fontsize=9)
        if j == 0:
            ax.set_ylabel("top-1 (%)")
        ax.grid(axis="y", alpha=0.3)
    legend = dict(zip(*reversed(axes[0, 0].get_legend_handles_labels())))  # one entry per label
    title = textwrap.wrap(heading, int(width * 14))
    fig.suptitle("\n".join(title), fontsize=9)
    height = fig.get_figheight()
    fig.legend(list(legend.values()), list(legend), fontsize=7, loc="upper center", ncol=len(legend), frameon=False,
               bbox_to_anchor=(0.5, 1 - (0.08 + 0.18 * len(title)) / height))
    top = 1 - (0.2 + 0.18 * len(title)) / height
    note = "\n".join(textwrap.fill(text.replace("`", ""), int(width * 17)) for text in marked.values())  # ~17 chars an inch
    if note:
        fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.015 + 0.015 * (note.count("\n") + 1) if note else 0, 1, top))
    fig.subplots_adjust(top=top - 0.3 / height)  # under the title and the legend, no further
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130)
    plt.close(fig)
    return list(outs)
