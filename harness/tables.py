"""Regenerate a paper table from MLflow: Markdown, LaTeX (booktabs) and CSV, ours beside the paper's.

    python -m harness.tables table3 --scale smoke [--overrides '{"pretrain.epochs": 2}']

Each cell's value is the final test top-1 of the FINISHED MLflow runs of its evaluation stage,
found by signature; with several seeds, mean ± std. A missing cell prints "—".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from harness.config import RunConfig
from harness.studies import METRIC_NAMES, METRIC_STAGE, ROOT, Study, expand, load_study
from harness.tracking import client, experiment_id

MISSING = "—"


def finished_runs(results_dir: Path) -> pd.DataFrame:
    """signature, stage, value (final test top-1) of every FINISHED evaluation run."""
    c = client(results_dir)
    rows, token = [], None
    exp = experiment_id(results_dir)
    while True:
        page = c.search_runs([exp], "attributes.status = 'FINISHED'", max_results=1000, page_token=token)
        for r in page:
            if "final_test_acc1" in r.data.metrics:
                rows.append({"signature": r.data.tags.get("signature"), "stage": r.data.tags.get("stage"),
                             "value": r.data.metrics["final_test_acc1"]})
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=["signature", "stage", "value"]).drop_duplicates("signature", keep="last")


def collect(study: Study, scale: str, overrides: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (cell, metric) with ours (mean, std, n), the paper's, signatures."""
    by_sig = runs.set_index("signature")["value"].to_dict()
    rows = []
    cells = expand(study, scale, overrides)
    for label in dict.fromkeys(c.label for c in cells):
        seeds = [c for c in cells if c.label == label]
        for metric in study.metrics:
            sigs = [c.signature(METRIC_STAGE[metric]) for c in seeds]
            values = [by_sig[s] for s in sigs if s in by_sig]
            rows.append({"table": study.table, "cell": label, "metric": METRIC_NAMES[metric],
                         "ours": pd.Series(values).mean() if values else None,
                         "std": pd.Series(values).std() if len(values) > 1 else None,
                         "n": len(values), "seeds": len(seeds),
                         "paper": study.paper.get(label, {}).get(metric),
                         "signatures": " ".join(sigs), "scale": scale})
    return pd.DataFrame(rows)


def fmt(ours, std, n, seeds) -> str:
    if n == 0:
        return MISSING
    text = f"{ours:.2f}" if std is None or pd.isna(std) else f"{ours:.2f} ± {std:.2f}"
    return text if n == seeds else f"{text} ({n}/{seeds} seeds)"


def wide(study: Study, long: pd.DataFrame) -> pd.DataFrame:
    """Rows LIN/FT; for every cell two columns: ours and the paper's."""
    table = {}
    for label in dict.fromkeys(long["cell"]):
        part = long[long["cell"] == label].set_index("metric")
        table[(label, "ours")] = [fmt(r.ours, r.std, r.n, r.seeds) for r in part.itertuples()]
        table[(label, "paper")] = [MISSING if pd.isna(p) else f"{p:.2f}" for p in part["paper"]]
        index = list(part.index)
    frame = pd.DataFrame(table, index=index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = ""
    return frame


def caption(study: Study, scale: str, cfg: RunConfig) -> str:
    m = cfg.model
    text = (f"Table {study.table}: {study.caption}. Scale `{scale}`: dataset {cfg.data.name} "
            f"({cfg.data.image_size}×{cfg.data.image_size}), encoder {m.depth}×{m.embed_dim} "
            f"({m.num_heads} heads, patch {m.patch_size}), decoder {m.decoder_depth} layers; "
            f"pre-training {cfg.pretrain.epochs} epochs, linear probe {cfg.linprobe.epochs}, "
            f"fine-tuning {cfg.finetune.epochs}. Top-1 (%) on the test split; paper: the paper's "
            f"numbers on {study.dataset}.")
    if scale != "paper":
        text += f" Not comparable with the paper: scale `{scale}` is not the paper's recipe."
    return text


def render(study: Study, scale: str, overrides: dict, runs: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    long = collect(study, scale, overrides, runs)
    frame = wide(study, long)
    cap = caption(study, scale, expand(study, scale, overrides)[0].config)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{study.name}.{ext}" for ext in ("md", "tex", "csv")}
    md = frame.copy()
    md.columns = [f"{a} ({b})" for a, b in md.columns]
    paths["md"].write_text(f"{cap}\n\n{md.to_markdown()}\n")
    latex = frame.style.to_latex(hrules=True, column_format="l" + "r" * frame.shape[1],
                                 multicol_align="c", caption=cap.replace("`", ""), label=f"tab:{study.name}")
    paths["tex"].write_text(latex.replace("%", r"\%").replace("±", r"$\pm$").replace("—", "---"))
    long.to_csv(paths["csv"], index=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--scale", required=True)
    ap.add_argument("--overrides", default="{}", help="config overrides as JSON (dotted keys)")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    study = load_study(args.study)
    paths = render(study, args.scale, json.loads(args.overrides), finished_runs(args.results),
                   args.results / "tables")
    print(paths["md"].read_text())
    print(f"[harness] table written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
