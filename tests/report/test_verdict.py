"""The reproduction verdict of a paper-scale table: ours − paper, the 95 % interval of the mean over
seeds (Student t), whether the paper's value lies in it, a mark on the cells that missed it and a
note counting them; none at the smaller scales, none without a paper value."""
import json
import math
import os
import subprocess

import pandas as pd
import pytest
from conftest import need_reader

from harness.core.layout import Results
from harness.plan.studies import Study, expand, load_study
from harness.plan.table_plan import table_plan
from harness.report.tables import collect, render
from harness.report.verdict import NOT_REPRODUCED_MARK, interval

# t(0.975, df), two-sided 95 %, from a printed table of Student's t (not from the code under test)
T975 = {1: 12.7062047, 2: 4.3026527, 4: 2.7764451}

# Made-up paper values for Table 3: LIN M=1 inside our interval, LIN M=2 outside it, FT M=1 and
# M=2 inside, LIN M=4 a cell with one finished seed, FT M=4 no paper value.
PAPER = {"cifar10": {"square M=1": {"lin": 75.0, "ft": 88.0}, "square M=2": {"lin": 90.0, "ft": 91.0},
                     "square M=4": {"lin": 79.38}}}
OURS = {("square M=1", "linprobe"): [80.0, 82.0], ("square M=2", "linprobe"): [80.0, 80.4],
        ("square M=4", "linprobe"): [78.0], ("square M=1", "finetune"): [87.0, 88.5],
        ("square M=2", "finetune"): [90.5, 91.2], ("square M=4", "finetune"): [89.0, 90.0]}


def study() -> Study:
    return Study(**{**load_study("table3").model_dump(), "seeds": [0, 1], "paper": PAPER})


def write_results(scale: str, root) -> Results:
    """Result files, as harness.run.runner writes them, for the cells of OURS (seed i gets the
    i-th value) and every control run; then the plan of the table, as the workflow writes it."""
    results = Results(root / "results")
    cells = expand(study(), scale)
    for cell in cells:
        for stage, sig in ((s, cell.signature(s)) for s in cell.stages(["lin", "ft"])):
            if stage == "pretrain":
                metrics = {"loss": 0.5, "loss_floor": 2.0, "loss_ratio": 0.25}
            elif cell.control:
                metrics = {"test_acc1": 30.0 + cell.seed}
            elif cell.seed < len(OURS[cell.setting, stage]):
                metrics = {"test_acc1": OURS[cell.setting, stage][cell.seed]}
            else:
                continue  # not finished
            results.run(sig).path.mkdir(parents=True, exist_ok=True)
            results.run(sig).result(stage).write_text(json.dumps({"stage": stage, "signature": sig, "metrics": metrics}))
    return results, table_plan(study(), scale, cells, results.root)


def expected(values: list[float], paper: float) -> tuple[float, float, str]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    low, high = mean - T975[n - 1] * sd / math.sqrt(n), mean + T975[n - 1] * sd / math.sqrt(n)
    return low, high, "yes" if low <= paper <= high else "no"


def test_the_interval_is_student_t_on_the_sample_std():
    low, high = interval(10.0, 2.0, 3)  # df 2
    assert (high - low) / 2 == pytest.approx(T975[2] * 2.0 / math.sqrt(3), rel=1e-6)
    assert interval(10.0, 2.0, 5)[1] == pytest.approx(10.0 + T975[4] * 2.0 / math.sqrt(5), rel=1e-6)


def test_a_paper_scale_table_says_which_cells_reproduced(tmp_path):
    results, plan = write_results("paper", tmp_path)
    paths = render(plan)
    csv = pd.read_csv(paths["csv"], keep_default_na=False, na_values=[""])
    for (setting, stage), values in OURS.items():
        metric = {"linprobe": "LIN", "finetune": "FT"}[stage]
        row = csv[(csv.setting == setting) & (csv.metric == metric)].iloc[0]
        paper = PAPER["cifar10"][setting].get(metric.lower())
        if paper is None:  # FT M=4: nothing to compare with
            assert pd.isna(row.ours_minus_paper) and pd.isna(row.ci95_low) and pd.isna(row.reproduced)
            continue
        assert row.ours_minus_paper == pytest.approx(sum(values) / len(values) - paper)
        if len(values) == 1:  # LIN M=4: a difference, no interval, no verdict
            assert pd.isna(row.ci95_low) and pd.isna(row.ci95_high) and pd.isna(row.reproduced)
            continue
        low, high, verdict = expected(values, paper)
        assert (row.ci95_low, row.ci95_high, row.reproduced) == (pytest.approx(low), pytest.approx(high), verdict)
    verdicts = csv.set_index(["setting", "metric"])["reproduced"]
    assert verdicts["square M=1", "LIN"] == "yes" and verdicts["square M=2", "LIN"] == "no"
    assert verdicts.dropna().to_dict() == {("square M=1", "LIN"): "yes", ("square M=2", "LIN"): "no",
                                           ("square M=1", "FT"): "yes", ("square M=2", "FT"): "yes"}
    assert csv[csv.source == "control"]["reproduced"].isna().all()

    md = paths["md"].read_text()
    assert f"| 80.2 ± 0.3 (2){NOT_REPRODUCED_MARK} " in md  # LIN M=2, the one that missed
    assert md.count(NOT_REPRODUCED_MARK) == 2  # that cell and the note
    assert ("Reproduced: 3 of 4 cells, the paper's value inside our 95 % interval of the mean over seeds "
            f"(Student t); {NOT_REPRODUCED_MARK} not reproduced, the paper's value outside it.") in md
    assert "1 cell has one seed and no verdict (more seeds: `--config 'seeds=[0, 1, 2]'`" in md
    tex = paths["tex"].read_text()
    assert r"80.2 $\pm$ 0.3 (2)$^{\times}$ &" in tex and r"$^{\times}$ not reproduced" in tex
    assert "Reproduced: 3 of 4 cells" in tex and "95 \\% interval" in tex and NOT_REPRODUCED_MARK not in tex
    assert "-{}-config 'seeds=[0, 1, 2]'" in tex  # two hyphens, not an en dash
    compile_latex(paths["tex"], tmp_path)


def test_a_small_scale_table_has_no_verdict(tmp_path):
    results, plan = write_results("tiny", tmp_path)
    paths = render(plan)
    csv = pd.read_csv(paths["csv"])
    assert {"ours_minus_paper", "ci95_low", "ci95_high", "reproduced"} <= set(csv.columns)
    assert csv[["ours_minus_paper", "ci95_low", "ci95_high", "reproduced"]].isna().all().all()
    assert (csv[csv.setting == "square M=2"]["n"] == 2).all()  # seeds there, still no verdict
    for ext in ("md", "tex"):
        text = paths[ext].read_text()
        assert NOT_REPRODUCED_MARK not in text and "$^{\\times}$" not in text
        assert "Reproduced" not in text and "reproduction verdict" not in text  # the claims have verdicts at every scale


def test_one_seed_everywhere_says_the_verdict_needs_seeds():
    study = load_study("table3")
    plan = table_plan(study, "paper", expand(study, "paper"), "results")
    runs = pd.DataFrame([{"signature": c.runs[s], "stage": s, "value": 80.0} for c in plan.cells
                         for s in ("linprobe", "finetune")])
    from harness.report.tables import notes

    long = collect(plan, runs)
    assert long["reproduced"].isna().all() and long["ours_minus_paper"].notna().sum() == 6
    (note,) = [n for n in notes(long) if "verdict" in n]
    assert note.startswith("No reproduction verdict: with one seed") and "seeds=[0, 1, 2]" in note
    table9 = load_study("table9")  # no paper numbers: nothing to reproduce, nothing said about seeds
    plan9 = table_plan(table9, "paper", expand(table9, "paper"), "results")
    long9 = collect(plan9, pd.DataFrame([{"signature": c.runs[s], "stage": s, "value": 80.0} for c in plan9.cells
                                         for s in ("linprobe", "finetune")]))
    assert long9["ours_minus_paper"].isna().all() and not [n for n in notes(long9) if "verdict" in n]


def test_table8_judges_its_own_cell_never_the_reported_rows():
    study = load_study("table8")
    plan = table_plan(study, "paper", expand(study, "paper", seeds=[0, 1]), "results")
    runs = pd.DataFrame([{"signature": c.runs[s], "stage": s, "value": 70.0 + c.seed} for c in plan.cells
                         for s in ("linprobe", "finetune")])
    long = collect(plan, runs).set_index(["setting", "metric"])
    assert long.loc[("RandSAC-Square 16->4 ViT-B", "LIN"), "reproduced"] == "yes"  # 70.5 ± 12.7·0.5 holds 70.9
    assert long.loc[("RandSAC-Square 16->4 ViT-B", "FT"), "reproduced"] == "no"  # 83.5 is far above
    reported = long[long.source == "reported by others, not run"]
    assert len(reported) and reported[["ours_minus_paper", "reproduced"]].isna().all().all()


def compile_latex(table, tmp_path):
    """The table inside a document: pdflatex without an error, and a PNG of it beside the PDF."""
    need_reader("pdflatex")
    need_reader("pdftoppm")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   f"\\begin{{document}}\n\\input{{{table}}}\n\\end{{document}}\n")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         env={**os.environ, "max_print_line": "10000"}, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert out.returncode == 0 and "Missing character" not in log and "Overfull \\hbox" not in log, out.stdout[-3000:]
    subprocess.run(["pdftoppm", "-png", "-r", "90", str(tmp_path / "doc.pdf"), str(tmp_path / "verdict")],
                   check=True, timeout=120)
    print(f"the table as pdflatex draws it: {tmp_path / 'verdict'}-1.png")
