"""Tables: paper and reported rows, means over seeds, captions, the control and its marks, LaTeX
that compiles."""
import os
import subprocess

import pandas as pd
import pytest
from conftest import need_reader

from harness.core.layout import Results
from harness.plan.studies import available_studies, expand, load_study
from harness.plan.table_plan import table_plan
from harness.report.tables import collect, render, wide


def plan_of(study, scale="tiny", **cells):
    """The plan of a table as the workflow writes it, from the study's cells (seeds=, controls=)."""
    return table_plan(study, scale, expand(study, scale, **cells), "results")


def test_tables_with_baselines_and_reported_rows():
    t7, t8 = load_study("table7"), load_study("table8")
    runs = pd.DataFrame([{"signature": c.signature("finetune"), "stage": "finetune", "value": 50.0}
                         for c in expand(t7, "tiny")], columns=["signature", "stage", "value"])
    long = collect(plan_of(t7), runs)
    sup = long[(long.setting == "Supervised") & (long.paper_dataset == "cifar10")].set_index("metric")
    assert set(sup["dataset"]) == {"mnist5k"}  # what ran at tiny
    assert sup.loc["FT", "ours"] == 50.0 and sup.loc["LIN", "source"] == "not applicable"
    frame = wide(t7, long)
    assert frame.loc["Supervised", ("cifar10", "LIN", "ours")] == "—"
    assert frame.loc["DINO", ("cifar100", "LIN", "paper")] == "65.78"
    long8 = collect(plan_of(t8), runs.iloc[:0])
    reported = long8[long8.source == "reported by others, not run"]
    assert "DINO ViT-B (reported)" in set(reported.setting) and reported.ours.isna().all()
    assert wide(t8, long8).loc["MAE ViT-B (reported)", ("imagenet1k", "LIN", "paper")] == "68.0"


def test_several_seeds_give_mean_and_std(tmp_path):
    from harness.plan.studies import Study

    study = Study(**{**load_study("table3").model_dump(), "seeds": [0, 1]})
    cells = expand(study, "tiny")
    assert len(cells) == 8 and len({c.signature("pretrain") for c in cells if not c.control}) == 6
    values = {c.signature("linprobe"): 50.0 + 10 * c.seed for c in cells}
    runs = pd.DataFrame([{"signature": s, "stage": "linprobe", "value": v} for s, v in values.items()])
    long = collect(plan_of(study), runs)
    lin = long[(long.metric == "LIN") & (long.setting == "square M=2")].iloc[0]
    assert lin["ours"] == 55.0 and lin["std"] == pytest.approx(7.0710678) and lin["n"] == 2
    assert wide(study, long).loc["LIN", ("square M=2", "ours")] == "55.0 ± 7.1 (2)"
    assert wide(study, long).loc["FT", ("square M=2", "ours")] == "…"  # no finetune run yet: pending, not "—"
    partial = collect(plan_of(study), runs.iloc[:1])
    row = partial[(partial.n == 1)].iloc[0]
    assert row.n == 1 and row.seeds == 2  # printed as "(1/2 seeds)"


def test_captions_name_what_the_cells_ran():
    from harness.report.tables import caption

    def cap(name, scale):  # from the facts the table's plan holds, as render reads them
        plan = plan_of(load_study(name), scale)
        return caption(plan.study, scale, [c.config for c in plan.cells])

    assert "patch 2/4/8" in cap("table9", "tiny")  # the swept setting lists its values
    assert "patch 1/4)" in cap("table1", "smoke") and "(16×16)" in cap("table1", "smoke")
    assert "patch 4)" in cap("table3", "smoke") and "pre-training 10 epochs" in cap("table3", "smoke")
    assert "(32×32, evaluated at 40×40)" in cap("table8", "smoke")
    paper6 = cap("table6", "paper")  # CIFAR10 with ViT-Tiny/4 beside ImageNet100 with ViT-Small/16
    assert "dataset cifar10/imagenet100 (32×32/256×256)" in paper6 and "patch 4/16" in paper6
    assert "encoder 12×192/12×384" in paper6
    assert "Not comparable" not in paper6 and "Not comparable" in cap("table3", "tiny")
    assert "columns ran on mnist5k: they are the same runs" in cap("table6", "smoke")
    assert "same runs" not in paper6 and "same runs" not in cap("table3", "smoke")


def test_tables_show_the_control_and_mark_pretraining_that_did_not_learn():
    study = load_study("table3")
    cells = expand(study, "tiny")
    runs = pd.DataFrame(
        [{"signature": c.signature(s), "stage": s, "value": 60.0 + i} for i, c in enumerate(cells)
         for s in ("linprobe", "finetune")] +
        [{"signature": c.signature("pretrain"), "stage": "pretrain", "ratio": 0.95 if c.setting == "square M=4" else 0.5}
         for c in cells if not c.control])
    long = collect(plan_of(study), runs)
    frame = wide(study, long)
    assert frame.loc["LIN", ("random init", "ours")] == "63.0" and frame.loc["LIN", ("random init", "paper")] == "—"
    # 62 and 61 are under the control's 63: ‡ (see the next test)
    assert frame.loc["LIN", ("square M=4", "ours")] == "62.0†‡" and frame.loc["LIN", ("square M=2", "ours")] == "61.0‡"
    assert set(long[long.setting == "random init"].source) == {"control"}
    from harness.report.tables import notes

    assert any("pre-training did not learn (loss ≥ 0.9 × floor" in n for n in notes(long))
    assert not any("did not learn" in n for n in notes(collect(plan_of(study), runs[runs.ratio != 0.95])))


def test_tables_mark_a_cell_below_its_own_control(tmp_path):
    """‡ on a cell whose mean is under the mean of its own random-init control over the same
    seeds: Table 9's P=2 against "random init (P=2)", not against P=4's control; a note under
    the table, in the LaTeX and the figure; no mark when every cell is above."""
    from harness.report.tables import BELOW_CONTROL_NOTE, notes, tex_text

    study = load_study("table9")
    cells = expand(study, "tiny", seeds=[0, 1])
    control = {c.setting.removeprefix("random init (").rstrip(")"): c for c in cells if c.control}
    assert set(control) == {"P=2", "P=4", "P=8"}

    def value(c):  # controls: P=2 at 70, the others at 40; cells: 55 (P=2 under its control), 45
        if c.control:
            return (70.0 if c.config.model.patch_size == 2 else 40.0) + c.seed
        return (55.0 if c.config.model.patch_size == 2 else 45.0) + c.seed

    runs = pd.DataFrame([{"signature": c.signature(s), "stage": s, "value": value(c)}
                         for c in cells for s in ("linprobe", "finetune")])
    long = collect(plan_of(study, seeds=[0, 1]), runs)
    frame = wide(study, long)
    cell_p2, cell_p4 = "patch-random P=2", "patch-random P=4"
    assert frame.loc["LIN", (cell_p2, "ours")] == "55.5 ± 0.7 (2)‡"
    assert frame.loc["LIN", (cell_p4, "ours")] == "45.5 ± 0.7 (2)"
    assert not frame.loc["LIN", ("random init (P=2)", "ours")].endswith("‡")
    assert BELOW_CONTROL_NOTE in notes(long) and r"$^\ddagger$" in tex_text(frame.loc["LIN", (cell_p2, "ours")])
    runs_above = runs.assign(value=runs.value.where(~runs.signature.isin(
        [c.signature(s) for c in cells if c.control for s in ("linprobe", "finetune")]), 0.0))
    assert BELOW_CONTROL_NOTE not in notes(collect(plan_of(study, seeds=[0, 1]), runs_above))
    from harness.report.figures import draw

    (png,) = draw(study, long, "Table 9", tmp_path / "table9.png")
    assert png.stat().st_size > 10_000


def fake_runs(study, scale="tiny") -> pd.DataFrame:
    cells = expand(study, scale, seeds=[0, 1])
    return pd.DataFrame(
        [{"signature": c.signature(s), "stage": s, "value": 40.0 + 5 * (i % 9) + c.seed}
         for i, c in enumerate(cells) for s in ("linprobe", "finetune") if s in c.stages(study.metrics)] +
        [{"signature": c.signature("pretrain"), "stage": "pretrain", "ratio": 0.95 if i == 2 else 0.6}
         for i, c in enumerate(cells) if "pretrain" in c.stages(study.metrics)])


def test_every_table_compiles_with_pdflatex(tmp_path):
    """Every table's LaTeX (two seeds, a control, a mark) inside a document: pdflatex, no error."""
    need_reader("pdflatex")
    need_reader("pdftoppm")
    results = Results(tmp_path / "results")
    names = available_studies()
    for name in names:
        study = load_study(name)
        render(plan_of(study, seeds=[0, 1]), fake_runs(study), results)
    tex = results.table("table3", "tex").read_text()
    assert r"\centering" in tex and r"\cmidrule" in tex and "Table 3:" not in tex
    assert r"$M{=}2$" in tex and r"$\pm$" in tex and r"$^\dagger$" in tex
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\begin{document}\n" + "".join(f"\\input{{{results.table(n, 'tex')}}}\n\\clearpage\n" for n in names)
                   + "\\end{document}\n")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         env={**os.environ, "max_print_line": "10000"},  # a log line per message, not wrapped at 79
                         capture_output=True, text=True, timeout=300)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert out.returncode == 0 and "LaTeX Error" not in log and "Undefined control sequence" not in log, out.stdout[-3000:]
    overfull = {n: log.split(f"{n}.tex")[1].split(".tex")[0] for n in names if "Overfull \\hbox" in log.split(f"{n}.tex")[1].split(".tex")[0]}
    assert not overfull, f"tables wider than a landscape page: {sorted(overfull)}"
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "3", "-l", "3", str(tmp_path / "doc.pdf"),
                    str(tmp_path / "latex-table3")], check=True, timeout=120)
    print(f"Table 3 as pdflatex draws it: {tmp_path / 'latex-table3'}-*.png")
