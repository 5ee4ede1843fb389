"""Render a table from its plan and its runs' result files: Markdown, LaTeX, CSV and a figure.

    python -m harness.report.tables results/tables/table3.plan.json [--results DIR]

Ours beside the paper's, LaTeX in booktabs. The plan file (harness.plan.table_plan) is what the
Snakefile writes for the table (`snakemake ... results/tables/table3.plan.json` writes it alone):
the study's caption and numbers, the scale, and every cell with the signatures of its stage
runs; its `results` folder is relative to where Snakemake ran (--results: another). Each
cell's value is the final test top-1 in its evaluation run's result file
(results/runs/<signature>/<stage>.json); with several seeds, mean ± std. A missing result file
prints "—" (by hand, a table renders from whatever has finished). No tracking store is read:
MLflow is where the runs are browsed, not where a table's numbers come from. Numbers other
papers reported (Table 8) are printed as such, never as ours. At scale `paper`, a cell with
seeds says whether it reproduced the paper's number (harness.report.verdict). A cell built from a
run whose result recorded other code than the plan's (today's) is marked stale (§), the note
naming the modules that changed (harness.plan.stale).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import pandas as pd

from harness.core import metrics as names
from harness.core.layout import Results
from harness.core.stages import DECLARED, PRETRAIN
from harness.report import verdict
from harness.core.fingerprint import recorded
from harness.report.marks import (BELOW_CONTROL_MARK, BELOW_CONTROL_NOTE, NOT_LEARNED_MARK, NOT_LEARNED_NOTE,
                                  STALE_MARK, below_control, not_learned, stale, stale_modules, stale_note)
from harness.plan.studies import CONTROL_SETTING
from harness.plan.table_plan import TablePlan, TableStudy
from harness.report import bill, claims
from harness.report.latex import tex_text

MISSING = "—"  # no such cell: a metric the setting does not have, a number the paper does not give
PENDING = "…"  # a cell whose runs have not finished (yet)


RUN_COLUMNS = ["signature", "stage", "value", "ratio", "changed"]


def read_runs(plan: TablePlan, results: Results | None = None) -> pd.DataFrame:
    """signature, stage, value (final test top-1 of an evaluation run), ratio (final loss /
    floor of a pre-training run) and changed (the modules changed between the code its result
    recorded and the plan's, space-separated; empty when the same or not recorded) of every run
    of the plan whose result file is there."""
    results = results or Results(Path(plan.results))
    acc = names.acc1("test")
    method_of = {sig: c.method for c in plan.cells for sig in c.runs.values()}
    rows = []
    for stage, sig in plan.inputs():
        path = results.run(sig).result(stage)
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        metrics = result.get("metrics", {})
        value, ratio = metrics.get(acc), metrics.get(names.LOSS_RATIO)
        code, today = recorded(result), plan.today(method_of.get(sig, ""), stage)
        changed = " ".join(code.changed(today)) if code and today else ""
        if value is not None or ratio is not None:
            rows.append({"signature": sig, "stage": stage, "value": value, "ratio": ratio, "changed": changed})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def collect(plan: TablePlan, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (the paper's dataset, setting, metric): ours (mean, std, n over
    seeds), the paper's, the dataset that really ran, and the largest final loss / floor of the
    cell's pre-training runs (`pretrain_ratio`) and the mean of the cell's own random-init
    control over the same seeds (`control`; none for the control itself), and the modules changed
    since the code of the runs its number is built from, evaluations and their pre-training
    (`stale`, space-separated; empty when none)."""
    study, cells = plan.study, plan.cells
    runs = runs.reindex(columns=RUN_COLUMNS).set_index("signature")
    by_sig, ratio_of = runs["value"].dropna().to_dict(), runs["ratio"].dropna().to_dict()
    changed_of = {sig: str(mods).split() for sig, mods in runs["changed"].dropna().items()}
    rows = []
    for dataset, setting in dict.fromkeys((c.dataset, c.setting) for c in cells):
        of_setting = [c for c in cells if (c.dataset, c.setting) == (dataset, setting)]
        ratios = [ratio_of[c.runs[PRETRAIN]] for c in of_setting
                  if PRETRAIN in c.runs and c.runs[PRETRAIN] in ratio_of]
        for metric in study.metrics:
            stage = names.TABLE_METRIC_STAGE[metric]
            runnable = [c for c in of_setting if stage in c.runs]
            sigs = list(dict.fromkeys(c.runs[stage] for c in runnable))  # a run counts once, whoever asks
            values = [by_sig[s] for s in sigs if s in by_sig]
            own_control = [] if of_setting[0].control else [
                by_sig[s] for s in (c.control_runs.get(stage) for c in runnable) if s in by_sig]
            built_from = sigs + [c.runs[PRETRAIN] for c in runnable if PRETRAIN in c.runs]
            changed = sorted({m for s in built_from for m in changed_of.get(s, ())})
            rows.append({"table": study.table, "paper_dataset": dataset, "dataset": of_setting[0].config.data.name,
                         "setting": setting, "metric": names.TABLE_METRIC_NAME[metric],
                         "ours": pd.Series(values).mean() if values else None,
                         "std": pd.Series(values).std() if len(values) > 1 else None,
                         "n": len(values), "seeds": len(sigs),
                         "paper": study.paper.get(dataset, {}).get(setting, {}).get(metric),
                         "source": ("control" if of_setting[0].control else "this run") if runnable else "not applicable",
                         "pretrain_ratio": max(ratios) if ratios else None,
                         "control": pd.Series(own_control).mean() if own_control else None,
                         "signatures": " ".join(sigs), "scale": plan.scale, "stale": " ".join(changed)})
    for dataset, settings in study.reported.items():
        for setting, numbers in settings.items():
            for metric in study.metrics:
                rows.append({"table": study.table, "paper_dataset": dataset, "dataset": None,
                             "setting": f"{setting} (reported)",
                             "metric": names.TABLE_METRIC_NAME[metric], "ours": None, "std": None, "n": 0, "seeds": 0,
                             "paper": numbers.get(metric), "source": "reported by others, not run",
                             "pretrain_ratio": None, "control": None, "signatures": "", "scale": plan.scale,
                             "stale": ""})
    return verdict.judge(pd.DataFrame(rows))  # at paper scale: ours − paper, 95 % interval, reproduced


def fmt_ours(row) -> str:
    """mean (one decimal), ± std (n) over seeds, a mark when the cell's pre-training did not learn
    (†), when the cell is below its random-init control (‡), at paper scale, when the paper's
    value lies outside the 95 % interval of its seeds (✗, harness.report.verdict), and when it is
    built from runs of other code than today's (§)."""
    if row.n == 0:
        return MISSING if row.source not in ("this run", "control") else PENDING
    text = f"{row.ours:.1f}"
    if row.seeds > 1:
        spread = "" if row.std is None or pd.isna(row.std) else f" ± {row.std:.1f}"
        text += f"{spread} ({row.n})" if row.n == row.seeds else f"{spread} ({row.n} of {row.seeds} seeds)"
    return (text + (NOT_LEARNED_MARK if not_learned(row) else "") + (BELOW_CONTROL_MARK if below_control(row) else "")
            + (verdict.NOT_REPRODUCED_MARK if verdict.not_reproduced(row) else "")
            + (STALE_MARK if stale(row) else ""))


def fmt_paper(value) -> str:
    """The paper's number as printed there (75.53, 89.0)."""
    if value is None or pd.isna(value):
        return MISSING
    return f"{value:.2f}" if round(value, 1) != round(value, 2) else f"{value:.1f}"


def wide(study: TableStudy, long: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics (or settings); columns: [the paper's dataset,] setting (or metric), ours | paper."""
    cells = long.assign(ours=[fmt_ours(r) for r in long.itertuples()], paper=[fmt_paper(p) for p in long["paper"]])
    cells = cells.melt(id_vars=["paper_dataset", "setting", "metric"], value_vars=["ours", "paper"],
                       var_name="source", value_name="text")
    index, across = ("metric", "setting") if study.rows == "metric" else ("setting", "metric")
    columns = (["paper_dataset"] if len(study.datasets) + len(study.reported) > 1 else []) + [across, "source"]
    frame = cells.pivot_table(index=index, columns=columns, values="text", aggfunc="first", sort=False)
    groups = dict.fromkeys(zip(*(long[c] for c in columns[:-1])))  # ours beside paper, in study order
    frame = frame.reindex(index=list(dict.fromkeys(long[index])),
                          columns=pd.MultiIndex.from_tuples([(*g, src) for g in groups for src in ("ours", "paper")]))
    frame = frame.fillna(MISSING)
    frame.index.name = None
    frame.columns.names = [None] * frame.columns.nlevels
    return frame


def title(study: TableStudy, scale: str) -> str:
    """The short caption: what the table compares, and whether it is comparable with the paper."""
    suffix = "" if scale == "paper" else f" (scale {scale}: not comparable with the paper)"
    return f"{study.caption}{suffix}."


def details(study: TableStudy, scale: str, cfgs: list) -> str:
    """What the cells ran, for the note under the table, from their configs (a RunConfig or the
    plan's CellFacts, harness.plan.table_plan). A setting that differs between cells (the patch size
    of Table 9, the datasets of Table 6 at `paper`) lists its values, e.g. "patch 2/4/8"."""
    def each(value) -> str:
        return "/".join(dict.fromkeys(str(value(c)) for c in cfgs))

    size = each(lambda c: f"{c.data.image_size}×{c.data.image_size}")
    if any(c.eval_size != c.data.image_size for c in cfgs):
        size += f", evaluated at {each(lambda c: f'{c.eval_size}×{c.eval_size}')}"
    epochs = ", ".join(f"{s.title} {each(lambda c, name=s.name: getattr(c, name).epochs)}" + (" epochs" if i == 0 else "")
                       for i, s in enumerate(DECLARED))  # "pre-training 10 epochs, linear probe 50, ..."
    metrics = ", ".join(f"{s.label}: {s.title.replace(' ', '-')} top-1 (%)" for s in DECLARED if s.evaluates)
    text = (f"Scale `{scale}`: dataset {each(lambda c: c.data.name)} ({size}), encoder "
            f"{each(lambda c: f'{c.model.depth}×{c.model.embed_dim}')} ({each(lambda c: c.model.num_heads)} heads, "
            f"patch {each(lambda c: c.model.patch_size)}), decoder depth {each(lambda c: c.model.decoder_depth)}; "
            f"{epochs}. {metrics}, on the test split; paper: the paper's numbers on {', '.join(study.datasets)}.")
    ran = {c.data.name for c in cfgs}
    if len(study.datasets) > 1 and len(ran) == 1:
        text += f" Every dataset's columns ran on {ran.pop()}: they are the same runs."
    if study.reported:
        text += " Rows marked (reported) are other methods' published numbers, not runs of this harness."
    if scale != "paper":
        text += f" Not comparable with the paper: scale `{scale}` is not the paper's recipe."
    return text


def caption(study: TableStudy, scale: str, cfgs: list) -> str:
    """Title and details in one line: what a table's Markdown opens with."""
    return f"Table {study.table}: {title(study, scale)} {details(study, scale, cfgs)}"


def notes(long: pd.DataFrame) -> list[str]:
    """What the marks and the control of a table mean, under it."""
    out = []
    if (long["source"] == "control").any():
        out.append(f"{CONTROL_SETTING}: a randomly initialised encoder of the cells' architecture, probed and "
                   f"fine-tuned with the same recipes (a control the paper does not report).")
    if any(not_learned(r) for r in long.itertuples() if r.n):
        out.append(NOT_LEARNED_NOTE)
    if any(below_control(r) for r in long.itertuples()):
        out.append(BELOW_CONTROL_NOTE)
    if (long["seeds"] > 1).any():
        out.append("With several seeds: mean ± std (number of seeds).")
    changed = sorted({m for r in long.itertuples() for m in stale_modules(r)})
    if changed:
        out.append(stale_note(changed))
    return out + verdict.notes(long)


def progress_note(plan: TablePlan, runs: pd.DataFrame) -> str:
    """For a table rendered before its runs finished: how many have, and what … means."""
    total = len(plan.inputs())
    done = len(set(zip(runs["stage"], runs["signature"])) & set(plan.inputs())) if len(runs) else 0
    if done >= total:
        return ""
    return (f"Partial table: {done} of {total} runs done; {PENDING} a cell whose runs have not finished, "
            f"{MISSING} a cell that does not apply.")


# --------------------------------------------------------------------------- LaTeX

def to_latex(frame: pd.DataFrame, label: str, short: str, note: str) -> str:
    """A booktabs table that drops into a paper: centred, the short caption (LaTeX numbers it),
    a \\cmidrule under every group header, the details in a footnote-size note under it."""
    levels = frame.columns.nlevels
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_text(short)}}}", rf"\label{{tab:{label}}}",
             r"\begin{tabular}{l" + "r" * frame.shape[1] + "}", r"\toprule"]
    for level in range(levels):
        keys = [col[:level + 1] for col in frame.columns]
        if level == levels - 1:
            lines.append(" & " + " & ".join(tex_text(str(k[-1])) for k in keys) + r" \\")
            break
        spans, rules, start = [], [], 2
        for key, group in itertools.groupby(keys):
            width = len(list(group))
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_text(str(key[-1]))}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines += [" & " + " & ".join(spans) + r" \\", "".join(rules)]
    lines.append(r"\midrule")
    for name, row in frame.iterrows():
        lines.append(" & ".join([tex_text(str(name)), *(tex_text(str(v)) for v in row)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
              rf"\parbox{{\linewidth}}{{\footnotesize {tex_text(note)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render(plan: TablePlan, runs: pd.DataFrame | None = None, results: Results | None = None,
           into: Path | None = None) -> dict[str, Path]:
    """The table of `plan` as Markdown, LaTeX, CSV (the long form) and a figure (PNG, PDF), in
    the tables folder of `results` (default: the plan's); with the study's claims, their section
    under the table and <table>.claims.csv|.png|.pdf (harness.report.claims). `runs`: default,
    the plan's result files; `into`: another folder than the tables folder (a partial table)."""
    from harness.report.figures import draw
    from harness.report.forest import draw as forest

    results = results or Results(Path(plan.results))
    study, scale = plan.study, plan.scale
    runs = read_runs(plan, results) if runs is None else runs
    long = collect(plan, runs)
    long, spent = bill.with_spent(long, plan, results)  # each cell's device-hours, as spent
    frame = wide(study, long)
    cfgs = [cell.config for cell in plan.cells if not cell.control]
    below = [details(study, scale, cfgs), *notes(long), *filter(None, [bill.spent_note(spent), progress_note(plan, runs)])]
    folder = into or results.tables
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{study.name}.{ext}" for ext in ("md", "tex", "csv", "png", "pdf")}
    md = frame.copy()
    md.columns = [" ".join(str(part) for part in col[:-1]) + f" ({col[-1]})" for col in md.columns]
    text = f"**Table {study.table}.** {title(study, scale)}\n\n{md.to_markdown(disable_numparse=True)}\n\n" + "\n\n".join(below) + "\n"
    tex = to_latex(frame, study.name, title(study, scale), " ".join(below))
    if study.claims:  # what the table concludes: a section under it, its CSV and forest plot beside it
        found = claims.check(plan, runs, long)
        heading = f"Claims of Table {study.table} (scale {scale})"
        text += "\n" + claims.markdown(found, heading)
        tex += "\n" + claims.latex(found, study.name, f"{heading}: {claims.count(found)}.")
        paths |= {f"claims.{ext}": folder / f"{study.name}.claims.{ext}" for ext in ("csv", "png", "pdf")}
        found.to_csv(paths["claims.csv"], index=False)
        forest(found, f"Table {study.table}: the paper's claims at scale {scale}, our paired effect and its 95 % "
                      f"interval, the paper's effect (×). {claims.count(found)}.", paths["claims.png"],
               paths["claims.pdf"])
    paths["md"].write_text(text)
    paths["tex"].write_text(tex)
    long.to_csv(paths["csv"], index=False)
    draw(study, long, f"Table {study.table}. {title(study, scale)}", paths["png"], paths["pdf"])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", type=Path, help="the table's plan file, results/tables/<table>.plan.json (the Snakefile "
                                            "writes it: snakemake ... results/tables/<table>.plan.json)")
    ap.add_argument("--results", type=Path, default=None,
                    help="the results folder holding runs/ and tables/ (default: the plan's)")
    args = ap.parse_args(argv)
    plan = TablePlan.read(args.plan)
    paths = render(plan, results=Results(args.results) if args.results else None)
    print(paths["md"].read_text())
    print(f"[harness] table written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
