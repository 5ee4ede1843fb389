"""Regenerate a paper table from MLflow: Markdown, LaTeX (booktabs) and CSV, ours beside the paper's.

    python -m harness.tables table3 --scale smoke [--overrides '{"pretrain": {"epochs": 2}}']

Each cell's value is the final test top-1 of the FINISHED MLflow runs of its evaluation stage,
found by signature; with several seeds, mean ± std. A missing cell prints "—". Numbers other
papers reported (Table 8) are printed as such, never as ours.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from harness.core import metrics as names
from harness.core.config import RunConfig
from harness.core.layout import Results
from harness.studies import ROOT, Study, expand, load_study
from harness.tracking import Store

MISSING = "—"


def finished_runs(store: Store) -> pd.DataFrame:
    """signature, stage, value (final test top-1) of every FINISHED evaluation run."""
    c = store.client()
    rows, token = [], None
    exp = store.experiment_id()
    key = names.final(names.acc1("test"))
    while True:
        page = c.search_runs([exp], "attributes.status = 'FINISHED'", max_results=1000, page_token=token)
        for r in page:
            if key in r.data.metrics:
                rows.append({"signature": r.data.tags.get("signature"), "stage": r.data.tags.get("stage"),
                             "value": r.data.metrics[key]})
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=["signature", "stage", "value"]).drop_duplicates("signature", keep="last")


def collect(study: Study, scale: str, overrides: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (dataset, setting, metric): ours (mean, std, n), the paper's."""
    by_sig = runs.set_index("signature")["value"].to_dict()
    cells = expand(study, scale, overrides)
    rows = []
    for dataset, setting in dict.fromkeys((c.dataset, c.setting) for c in cells):
        seeds = [c for c in cells if (c.dataset, c.setting) == (dataset, setting)]
        for metric in study.metrics:
            stage = names.TABLE_METRIC_STAGE[metric]
            runnable = [c for c in seeds if stage in c.stages(study.metrics)]
            sigs = [c.signature(stage) for c in runnable]
            values = [by_sig[s] for s in sigs if s in by_sig]
            rows.append({"table": study.table, "dataset": dataset, "setting": setting, "metric": names.TABLE_METRIC_NAME[metric],
                         "ours": pd.Series(values).mean() if values else None,
                         "std": pd.Series(values).std() if len(values) > 1 else None,
                         "n": len(values), "seeds": len(runnable),
                         "paper": study.paper.get(dataset, {}).get(setting, {}).get(metric),
                         "source": "this run" if runnable else "not applicable",
                         "signatures": " ".join(sigs), "scale": scale})
    for dataset, settings in study.reported.items():
        for setting, numbers in settings.items():
            for metric in study.metrics:
                rows.append({"table": study.table, "dataset": dataset, "setting": f"{setting} (reported)",
                             "metric": names.TABLE_METRIC_NAME[metric], "ours": None, "std": None, "n": 0, "seeds": 0,
                             "paper": numbers.get(metric), "source": "reported by others, not run",
                             "signatures": "", "scale": scale})
    return pd.DataFrame(rows)


def fmt_ours(row) -> str:
    if row.n == 0:
        return MISSING
    text = f"{row.ours:.2f}" if row.std is None or pd.isna(row.std) else f"{row.ours:.2f} ± {row.std:.2f}"
    return text if row.n == row.seeds else f"{text} ({row.n}/{row.seeds} seeds)"


def wide(study: Study, long: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics (or settings); columns: [dataset,] setting (or metric), ours | paper."""
    cells = long.assign(ours=[fmt_ours(r) for r in long.itertuples()],
                        paper=[MISSING if pd.isna(p) else f"{p:.2f}" for p in long["paper"]])
    cells = cells.melt(id_vars=["dataset", "setting", "metric"], value_vars=["ours", "paper"],
                       var_name="source", value_name="text")
    index, across = ("metric", "setting") if study.rows == "metric" else ("setting", "metric")
    columns = (["dataset"] if len(study.datasets) + len(study.reported) > 1 else []) + [across, "source"]
    frame = cells.pivot_table(index=index, columns=columns, values="text", aggfunc="first", sort=False)
    groups = dict.fromkeys(zip(*(long[c] for c in columns[:-1])))  # ours beside paper, in study order
    frame = frame.reindex(index=list(dict.fromkeys(long[index])),
                          columns=pd.MultiIndex.from_tuples([(*g, src) for g in groups for src in ("ours", "paper")]))
    frame = frame.fillna(MISSING)
    frame.index.name = None
    frame.columns.names = [None] * frame.columns.nlevels
    return frame


def caption(study: Study, scale: str, cfgs: list[RunConfig]) -> str:
    """The table's caption: what its cells ran. A setting that differs between cells (the
    patch size of Table 9, the datasets of Table 6 at `paper`) lists its values, e.g. "patch 2/4/8"."""
    def each(value) -> str:
        return "/".join(dict.fromkeys(str(value(c)) for c in cfgs))

    size = each(lambda c: f"{c.data.image_size}×{c.data.image_size}")
    if any(c.eval_size != c.data.image_size for c in cfgs):
        size += f", evaluated at {each(lambda c: f'{c.eval_size}×{c.eval_size}')}"
    text = (f"Table {study.table}: {study.caption}. Scale `{scale}`: dataset {each(lambda c: c.data.name)} "
            f"({size}), encoder {each(lambda c: f'{c.model.depth}×{c.model.embed_dim}')} "
            f"({each(lambda c: c.model.num_heads)} heads, patch {each(lambda c: c.model.patch_size)}), decoder "
            f"{each(lambda c: c.model.decoder_depth)} layers; pre-training {each(lambda c: c.pretrain.epochs)} "
            f"epochs, linear probe {each(lambda c: c.linprobe.epochs)}, fine-tuning "
            f"{each(lambda c: c.finetune.epochs)}. Top-1 (%) on the test split; "
            f"paper: the paper's numbers on {', '.join(study.datasets)}.")
    names = {c.data.name for c in cfgs}
    if len(study.datasets) > 1 and len(names) == 1:
        text += f" Every dataset's columns ran on {names.pop()}: they are the same runs."
    if study.reported:
        text += " Rows marked (reported) are other methods' published numbers, not runs of this harness."
    if scale != "paper":
        text += f" Not comparable with the paper: scale `{scale}` is not the paper's recipe."
    return text


def render(study: Study, scale: str, overrides: dict, runs: pd.DataFrame, results: Results) -> dict[str, Path]:
    long = collect(study, scale, overrides, runs)
    frame = wide(study, long)
    cap = caption(study, scale, [cell.config for cell in expand(study, scale, overrides)])
    results.tables.mkdir(parents=True, exist_ok=True)
    paths = {ext: results.table(study.name, ext) for ext in ("md", "tex", "csv")}
    md = frame.copy()
    md.columns = [" ".join(str(part) for part in col[:-1]) + f" ({col[-1]})" for col in md.columns]
    paths["md"].write_text(f"{cap}\n\n{md.to_markdown()}\n")
    latex = frame.style.to_latex(hrules=True, column_format="l" + "r" * frame.shape[1], multicol_align="c",
                                 caption=cap.replace("`", "").replace("%", r"\%"), label=f"tab:{study.name}")
    paths["tex"].write_text(latex.replace("±", r"$\pm$").replace("—", "---").replace("×", r"$\times$")
                            .replace("->", r"$\to$"))
    long.to_csv(paths["csv"], index=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--scale", required=True)
    ap.add_argument("--overrides", default="{}", help="config overrides as JSON (nested sections)")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else the results' sqlite store")
    args = ap.parse_args(argv)
    study = load_study(args.study)
    results = Results(args.results)
    paths = render(study, args.scale, json.loads(args.overrides), finished_runs(Store.of(results, args.tracking_uri)),
                   results)
    print(paths["md"].read_text())
    print(f"[harness] table written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
