"""Regenerate a paper table from MLflow: Markdown, LaTeX (booktabs) and CSV, ours beside the paper's.

    python -m harness.tables table3 --scale smoke [--overrides '{"pretrain": {"epochs": 2}}']

Each cell's value is the final test top-1 of the FINISHED MLflow runs of its evaluation stage,
found by signature; with several seeds, mean ± std. A missing cell prints "—". Numbers other
papers reported (Table 8) are printed as such, never as ours.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

import pandas as pd

from harness.core import metrics as names
from harness.core.config import RunConfig
from harness.core.layout import Results
from harness.science import methods
from harness.studies import CONTROL_SETTING, ROOT, Study, control_config, expand, load_study
from harness.tracking import Store

MISSING = "—"


RUN_COLUMNS = ["signature", "stage", "value", "ratio"]


def finished_runs(store: Store) -> pd.DataFrame:
    """signature, stage, value (final test top-1 of an evaluation run), ratio (final loss /
    floor of a pre-training run) of every FINISHED run."""
    c = store.client()
    rows, token = [], None
    exp = store.experiment_id()
    acc, ratio = names.final(names.acc1("test")), names.final(names.LOSS_RATIO)
    while True:
        page = c.search_runs([exp], "attributes.status = 'FINISHED'", max_results=1000, page_token=token)
        for r in page:
            stage, metrics = r.data.tags.get("stage"), r.data.metrics
            value, loss_ratio = metrics.get(names.key(stage, acc)), metrics.get(names.key(stage, ratio))
            if value is not None or loss_ratio is not None:
                rows.append({"signature": r.data.tags.get("signature"), "stage": stage, "value": value,
                             "ratio": loss_ratio})
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=RUN_COLUMNS).drop_duplicates("signature", keep="last")


def collect(study: Study, scale: str, overrides: dict, runs: pd.DataFrame, *, seeds: list[int] | None = None,
            controls: bool = True) -> pd.DataFrame:
    """Long table: one row per (the paper's dataset, setting, metric): ours (mean, std, n over
    seeds), the paper's, the dataset that really ran, and the largest final loss / floor of the
    cell's pre-training runs (`pretrain_ratio`) and the mean of the cell's own random-init
    control over the same seeds (`control`; none for the control itself)."""
    runs = runs.reindex(columns=RUN_COLUMNS).set_index("signature")
    by_sig, ratio_of = runs["value"].dropna().to_dict(), runs["ratio"].dropna().to_dict()
    cells = expand(study, scale, overrides, seeds=seeds, controls=controls)
    rows = []
    for dataset, setting in dict.fromkeys((c.dataset, c.setting) for c in cells):
        of_setting = [c for c in cells if (c.dataset, c.setting) == (dataset, setting)]
        ratios = [ratio_of[c.signature("pretrain")] for c in of_setting
                  if "pretrain" in c.stages(study.metrics) and c.signature("pretrain") in ratio_of]
        for metric in study.metrics:
            stage = names.TABLE_METRIC_STAGE[metric]
            runnable = [c for c in of_setting if stage in c.stages(study.metrics)]
            sigs = [c.signature(stage) for c in runnable]
            values = [by_sig[s] for s in sigs if s in by_sig]
            own_control = [] if of_setting[0].control else [
                by_sig[s] for s in (methods.signature(control_config(c.config), stage) for c in runnable) if s in by_sig]
            rows.append({"table": study.table, "paper_dataset": dataset, "dataset": of_setting[0].config.data.name,
                         "setting": setting, "metric": names.TABLE_METRIC_NAME[metric],
                         "ours": pd.Series(values).mean() if values else None,
                         "std": pd.Series(values).std() if len(values) > 1 else None,
                         "n": len(values), "seeds": len(runnable),
                         "paper": study.paper.get(dataset, {}).get(setting, {}).get(metric),
                         "source": ("control" if of_setting[0].control else "this run") if runnable else "not applicable",
                         "pretrain_ratio": max(ratios) if ratios else None,
                         "control": pd.Series(own_control).mean() if own_control else None,
                         "signatures": " ".join(sigs), "scale": scale})
    for dataset, settings in study.reported.items():
        for setting, numbers in settings.items():
            for metric in study.metrics:
                rows.append({"table": study.table, "paper_dataset": dataset, "dataset": None,
                             "setting": f"{setting} (reported)",
                             "metric": names.TABLE_METRIC_NAME[metric], "ours": None, "std": None, "n": 0, "seeds": 0,
                             "paper": numbers.get(metric), "source": "reported by others, not run",
                             "pretrain_ratio": None, "control": None, "signatures": "", "scale": scale})
    return pd.DataFrame(rows)


NOT_LEARNED_MARK = "†"
NOT_LEARNED_NOTE = (f"{NOT_LEARNED_MARK} pre-training did not learn (loss ≥ {names.NOT_LEARNED_RATIO} × floor, "
                    f"the loss of predicting nothing).")


BELOW_CONTROL_MARK = "‡"
BELOW_CONTROL_NOTE = (f"{BELOW_CONTROL_MARK} below its random-init control: at this scale the pre-training "
                      f"left the encoder worse than a random one for this metric.")


def not_learned(row) -> bool:
    return row.pretrain_ratio is not None and not pd.isna(row.pretrain_ratio) and row.pretrain_ratio >= names.NOT_LEARNED_RATIO


def below_control(row) -> bool:
    """A cell whose number (mean over seeds) is under its own control's (same encoder, recipe, seeds)."""
    return bool(row.n) and row.control is not None and not pd.isna(row.control) and row.ours < row.control


def fmt_ours(row) -> str:
    """mean (one decimal), ± std (n) over seeds, a mark when the cell's pre-training did not learn
    (†) and when the cell is below its random-init control (‡)."""
    if row.n == 0:
        return MISSING
    text = f"{row.ours:.1f}"
    if row.seeds > 1:
        spread = "" if row.std is None or pd.isna(row.std) else f" ± {row.std:.1f}"
        text += f"{spread} ({row.n})" if row.n == row.seeds else f"{spread} ({row.n} of {row.seeds} seeds)"
    return text + (NOT_LEARNED_MARK if not_learned(row) else "") + (BELOW_CONTROL_MARK if below_control(row) else "")


def fmt_paper(value) -> str:
    """The paper's number as printed there (75.53, 89.0)."""
    if value is None or pd.isna(value):
        return MISSING
    return f"{value:.2f}" if round(value, 1) != round(value, 2) else f"{value:.1f}"


def wide(study: Study, long: pd.DataFrame) -> pd.DataFrame:
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


def title(study: Study, scale: str) -> str:
    """The short caption: what the table compares, and whether it is comparable with the paper."""
    suffix = "" if scale == "paper" else f" (scale {scale}: not comparable with the paper)"
    return f"{study.caption}{suffix}."


def details(study: Study, scale: str, cfgs: list[RunConfig]) -> str:
    """What the cells ran, for the note under the table. A setting that differs between cells
    (the patch size of Table 9, the datasets of Table 6 at `paper`) lists its values, e.g. "patch 2/4/8"."""
    def each(value) -> str:
        return "/".join(dict.fromkeys(str(value(c)) for c in cfgs))

    size = each(lambda c: f"{c.data.image_size}×{c.data.image_size}")
    if any(c.eval_size != c.data.image_size for c in cfgs):
        size += f", evaluated at {each(lambda c: f'{c.eval_size}×{c.eval_size}')}"
    text = (f"Scale `{scale}`: dataset {each(lambda c: c.data.name)} ({size}), encoder "
            f"{each(lambda c: f'{c.model.depth}×{c.model.embed_dim}')} ({each(lambda c: c.model.num_heads)} heads, "
            f"patch {each(lambda c: c.model.patch_size)}), decoder depth {each(lambda c: c.model.decoder_depth)}; "
            f"pre-training {each(lambda c: c.pretrain.epochs)} epochs, linear probe {each(lambda c: c.linprobe.epochs)}, "
            f"fine-tuning {each(lambda c: c.finetune.epochs)}. LIN: linear-probe top-1 (%), FT: fine-tuning top-1 (%), "
            f"on the test split; paper: the paper's numbers on {', '.join(study.datasets)}.")
    ran = {c.data.name for c in cfgs}
    if len(study.datasets) > 1 and len(ran) == 1:
        text += f" Every dataset's columns ran on {ran.pop()}: they are the same runs."
    if study.reported:
        text += " Rows marked (reported) are other methods' published numbers, not runs of this harness."
    if scale != "paper":
        text += f" Not comparable with the paper: scale `{scale}` is not the paper's recipe."
    return text


def caption(study: Study, scale: str, cfgs: list[RunConfig]) -> str:
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
    return out


# --------------------------------------------------------------------------- LaTeX

def tex_text(text: str) -> str:
    """Plain text to LaTeX: symbols in math, the paper's M, K and P as math, escapes."""
    text = text.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("&", r"\&").replace("_", r"\_")
    text = text.replace("#", r"\#").replace("`", "")
    text = re.sub(r"\b([MKP])=(\d+)", r"$\1{=}\2$", text)
    text = re.sub(r"(?<![\w$])([MKP])(?![\w${])", r"$\1$", text)  # the paper's M, K, P standing alone
    text = re.sub(r"(\d+)->(\d+)(?:->(\d+))?", lambda m: "$" + r"{\to}".join(g for g in m.groups() if g) + "$", text)
    for plain, math in (("±", r"$\pm$"), ("—", "---"), ("×", r"$\times$"), ("≥", r"$\geq$"),
                        (NOT_LEARNED_MARK, r"$^\dagger$"), (BELOW_CONTROL_MARK, r"$^\ddagger$"), ("->", r"$\to$")):
        text = text.replace(plain, math)
    return text


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


def render(study: Study, scale: str, overrides: dict, runs: pd.DataFrame, results: Results, *,
           seeds: list[int] | None = None, controls: bool = True) -> dict[str, Path]:
    """The table as Markdown, LaTeX, CSV (the long form) and a figure (PNG, PDF)."""
    from harness.figures import draw

    long = collect(study, scale, overrides, runs, seeds=seeds, controls=controls)
    frame = wide(study, long)
    cfgs = [cell.config for cell in expand(study, scale, overrides, seeds=seeds, controls=False)]
    below = [details(study, scale, cfgs), *notes(long)]
    results.tables.mkdir(parents=True, exist_ok=True)
    paths = {ext: results.table(study.name, ext) for ext in ("md", "tex", "csv", "png", "pdf")}
    md = frame.copy()
    md.columns = [" ".join(str(part) for part in col[:-1]) + f" ({col[-1]})" for col in md.columns]
    paths["md"].write_text(f"**Table {study.table}.** {title(study, scale)}\n\n{md.to_markdown(disable_numparse=True)}\n\n"
                           + "\n\n".join(below) + "\n")
    paths["tex"].write_text(to_latex(frame, study.name, title(study, scale), " ".join(below)))
    long.to_csv(paths["csv"], index=False)
    draw(study, long, f"Table {study.table}. {title(study, scale)}", paths["png"], paths["pdf"])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--scale", required=True)
    ap.add_argument("--overrides", default="{}", help="config overrides as JSON (nested sections)")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else the results' sqlite store")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds replacing the study's, e.g. 0,1,2")
    ap.add_argument("--no-controls", dest="controls", action="store_false", help="leave out the random-init control")
    args = ap.parse_args(argv)
    study = load_study(args.study)
    results = Results(args.results)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    paths = render(study, args.scale, json.loads(args.overrides), finished_runs(Store.of(results, args.tracking_uri)),
                   results, seeds=seeds, controls=args.controls)
    print(paths["md"].read_text())
    print(f"[harness] table written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
