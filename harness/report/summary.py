"""The `claims` target: the paper's claims over every table that has run, in one place.

    python -m harness.report.summary results    # results/claims.md, .csv and .png

Every table plan in results/tables (what the table rule last rendered, harness.plan.table_plan)
with the result files of its runs that exist: a table still running shows the comparisons it
has. No tracking store is read. The Markdown opens with the one-line count, e.g. "at smoke,
3 seeds: 9 hold, 1 reversed, 4 unresolved of 14", then each table's claims section; the CSV
holds every comparison (harness.report.claims.COLUMNS); the PNG is their forest plot.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.core.layout import Results
from harness.plan.table_plan import TablePlan
from harness.report import claims
from harness.report.forest import draw
from harness.report.tables import collect, read_runs


def gather(results: Results) -> pd.DataFrame:
    """The claims of every table whose plan file is in `results`, from its runs' result files."""
    frames = []
    for path in sorted(results.tables.glob("*.plan.json"), key=lambda p: (len(p.name), p.name)):
        plan = TablePlan.read(path)
        if not plan.study.claims:
            continue
        runs = read_runs(plan, results)
        if runs.empty:
            continue  # a table none of whose runs has finished has not run
        frames.append(claims.check(plan, runs, collect(plan, runs)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=claims.COLUMNS)


def write(results: Results) -> dict[str, Path]:
    """results/claims.md, .csv and .png: every table's claims, the one-line count first."""
    frame = gather(results)
    paths = {ext: results.root / f"claims.{ext}" for ext in ("md", "csv", "png")}
    results.root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(paths["csv"], index=False)
    parts = [f"# The paper's claims, checked\n\n**{claims.count(frame)}.** Per table below; every comparison in "
             f"`{paths['csv'].name}`, the forest plot in `{paths['png'].name}`.\n"]
    for table, of_table in frame.groupby("table", sort=False):
        parts.append(claims.markdown(of_table, f"Table {table} (scale {of_table['scale'].iloc[0]}): "
                                               f"{claims.count(of_table)}"))
    if frame.empty:
        parts.append("No table with claims has finished runs yet.\n")
    paths["md"].write_text("\n".join(parts))
    draw(frame, f"The paper's claims: our paired effect (95 % interval) and the paper's (×). {claims.count(frame)}.",
         paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="?", default=Path("results"), help="the results folder (default results)")
    args = ap.parse_args(argv)
    paths = write(Results(args.results))
    print(paths["md"].read_text())
    print(f"[harness] claims written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
