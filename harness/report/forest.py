"""The forest plot of a table's claims (harness.report.claims): one line per comparison, our paired
effect A − B as a dot with its 95 % interval, the paper's effect as a cross, 0 as the line of no
difference; coloured by verdict. results/tables/<table>.claims.png|.pdf and results/claims.png.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from harness.report.claims import (HOLDS, NEEDS_SEEDS, NOT_COMPARABLE, NOT_RUN, REVERSED,  # noqa: E402
                                   UNRESOLVED, folded)

COLOUR = {HOLDS: "#2ca02c", REVERSED: "#d62728", UNRESOLVED: "#7f7f7f", NEEDS_SEEDS: "#1f77b4",
          NOT_COMPARABLE: "#bbbbbb", NOT_RUN: "#bbbbbb"}


def draw(frame: pd.DataFrame, heading: str, *outs: Path) -> list[Path]:
    """Draw the comparisons of `frame` (harness.report.claims.COLUMNS) into each of `outs`."""
    rows = folded(frame)
    height = 1.4 + 0.32 * max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(10.0, height))
    tables = len({r["table"] for r in rows}) > 1
    labels = []
    for y, r in enumerate(reversed(rows)):
        colour = COLOUR[r["verdict"]]
        if pd.notna(r["ci95_low"]):
            ax.hlines(y, r["ci95_low"], r["ci95_high"], color=colour, linewidth=2)
        if r["n"]:
            hollow = r["verdict"] in (NEEDS_SEEDS, NOT_COMPARABLE)
            ax.plot(r["effect"], y, "o", color=colour, markerfacecolor="white" if hollow else colour, markersize=6)
        for text in r["paper_text"].split(" · "):
            if text != "—":
                ax.plot(float(text), y, "x", color="black", markersize=6)
        where = r["paper_dataset"] if r["dataset"] in r["paper_dataset"].split(" · ") else r["dataset"]
        label = f"{'T%s ' % r['table'] if tables else ''}[{r['claim']}] {r['statement']} · {r['metric']} · {where}"
        labels.append(label.replace("->", "→") + (f" {r['marks']}" if r["marks"] else "")
                      + ("  (not run)" if r["verdict"] == NOT_RUN else ""))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(-0.7, max(len(labels), 1) - 0.3)
    ax.set_xlabel("effect A − B (top-1 points), paired by seed", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    shown = [v for v in COLOUR if any(r["verdict"] == v for r in rows)]
    handles = [Line2D([], [], marker="o", color=COLOUR[v], label=v, linewidth=2,
                      markerfacecolor="white" if v in (NEEDS_SEEDS, NOT_COMPARABLE) else COLOUR[v]) for v in shown]
    handles.append(Line2D([], [], marker="x", color="black", linestyle="", label="paper"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the data
    fig.suptitle("\n".join(textwrap.wrap(heading, 110)), fontsize=9)
    fig.tight_layout()
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130)
    plt.close(fig)
    return list(outs)
