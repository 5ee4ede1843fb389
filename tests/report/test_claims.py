"""What a table concludes: the paper's claims as paired effects over seeds, with their 95 %
intervals, verdicts and seeds needed, checked against numbers computed by hand; the claims
section, CSV and forest plot of a table; the summary over every table."""
import json
import math

import pandas as pd
import pytest

from harness.core.layout import Results
from harness.plan.studies import Study, expand, load_study
from harness.plan.table_plan import table_plan
from harness.report import claims, summary
from harness.report.claims import HOLDS, NEEDS_SEEDS, NOT_COMPARABLE, NOT_RUN, REVERSED, UNRESOLVED, judge
from harness.report.tables import collect, read_runs, render

# t(0.975, df), two-sided 95 %, from a printed table of Student's t (not from the code under test)
T975 = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463}


def by_hand(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


@pytest.mark.parametrize("diffs, relation, verdict", [
    ([5.0, 5.5, 4.0], "better", HOLDS),  # interval [2.9, 6.7]
    ([-5.0, -5.5, -5.0], "better", REVERSED),
    ([2.0, -2.0, 0.0], "better", UNRESOLVED),
    ([-3.0, -4.0, -5.0], "no_better", HOLDS),  # a claim of no gain: the interval excludes any gain
    ([3.0, 4.0, 5.0], "no_better", REVERSED),
    ([1.0, -1.0, 0.5], "no_better", UNRESOLVED),
])
def test_verdicts_and_intervals_as_computed_by_hand(diffs, relation, verdict):
    effect = judge(diffs, relation)
    mean, sd, low, high = by_hand(diffs)
    assert effect.verdict == verdict and effect.n == 3
    assert (effect.mean, effect.sd, effect.low, effect.high) == pytest.approx((mean, sd, low, high), rel=1e-6)
    assert verdict == UNRESOLVED or effect.seeds_needed is None  # only an unresolved claim asks for seeds


def test_one_seed_gives_the_difference_and_needs_seeds_none_gives_not_run():
    one = judge([4.0], "better")
    assert (one.n, one.mean, one.low, one.verdict) == (1, 4.0, None, NEEDS_SEEDS)
    assert judge([], "better").verdict == NOT_RUN


# Seeds for 80 % power of a paired two-sided t test at 5 %, effect size d = effect / sd, from
# power tables (Cohen 1988; G*Power): d = 1 -> 10 pairs, 0.8 -> 15, 0.5 -> 34.
@pytest.mark.parametrize("d, n", [(1.0, 10), (0.8, 15), (0.5, 34)])
def test_seeds_needed_is_the_power_tables(d, n):
    assert claims.seeds_needed(2.0 * d, 2.0) == n
    assert claims.seeds_needed(-2.0 * d, 2.0) == n  # the size of the effect, either way


def test_an_unresolved_claim_asks_for_the_seeds_that_resolve_the_papers_effect():
    # diffs [2, -2, 0]: sd 2; the paper's effect 2 -> d = 1 -> 10 seeds; without it, our mean 0: none
    assert judge([2.0, -2.0, 0.0], "better", target=2.0).seeds_needed == 10
    assert judge([2.0, -2.0, 0.0], "better").seeds_needed is None


# Made-up Table 3 results, three seeds: LIN M=2 − M=1 holds, LIN M=2 − M=4 is reversed, FT
# M=2 − M=1 is unresolved (paired sd 2, the paper's effect 2: 10 seeds), FT M=2 − M=4 has one
# pair (M=4 finished one seed): needs seeds.
OURS = {("square M=1", "linprobe"): [80.0, 81.0, 82.0], ("square M=2", "linprobe"): [85.0, 86.5, 86.0],
        ("square M=4", "linprobe"): [90.0, 92.0, 91.0], ("square M=1", "finetune"): [90.0, 91.0, 92.0],
        ("square M=2", "finetune"): [92.0, 89.0, 92.0], ("square M=4", "finetune"): [88.0]}
PAPER = {"cifar10": {"square M=1": {"lin": 75.53, "ft": 89.0}, "square M=2": {"lin": 81.38, "ft": 91.0},
                     "square M=4": {"lin": 79.38, "ft": 90.23}}}


def write_results(root, study: Study, ours, scale="smoke", seeds=(0, 1, 2)):
    results = Results(root / "results")
    cells = expand(study, scale, seeds=list(seeds))
    for cell in cells:
        for stage in cell.stages(study.metrics):
            sig = cell.signature(stage)
            if stage == "pretrain":
                metrics = {"loss": 0.5, "loss_floor": 2.0, "loss_ratio": 0.25}
            elif cell.control:
                metrics = {"test_acc1": 10.0}
            elif cell.seed < len(ours.get((cell.setting, stage), [])):
                metrics = {"test_acc1": ours[cell.setting, stage][cell.seed]}
            else:
                continue
            results.run(sig).path.mkdir(parents=True, exist_ok=True)
            results.run(sig).result(stage).write_text(json.dumps({"stage": stage, "metrics": metrics}))
    return results, table_plan(study, scale, cells, results.root)


def table3() -> Study:
    return Study(**{**load_study("table3").model_dump(), "paper": PAPER})


def test_a_tables_claims_one_of_each_verdict(tmp_path):
    results, plan = write_results(tmp_path, table3(), OURS)
    runs = read_runs(plan, results)
    found = claims.check(plan, runs, collect(plan, runs)).set_index(["statement", "metric"])
    lin = lambda a, b: [x - y for x, y in zip(OURS[a, "linprobe"], OURS[b, "linprobe"])]  # noqa: E731
    cases = {("square M=2 > square M=1", "LIN"): (lin("square M=2", "square M=1"), HOLDS, 81.38 - 75.53),
             ("square M=2 > square M=4", "LIN"): (lin("square M=2", "square M=4"), REVERSED, 81.38 - 79.38),
             ("square M=2 > square M=1", "FT"): ([2.0, -2.0, 0.0], UNRESOLVED, 2.0)}
    for key, (diffs, verdict, paper) in cases.items():
        row = found.loc[key]
        mean, sd, low, high = by_hand(diffs)
        assert row.verdict == verdict and row.n == 3
        assert (row.effect, row.sd, row.ci95_low, row.ci95_high) == pytest.approx((mean, sd, low, high), rel=1e-6)
        assert row.paper_effect == pytest.approx(paper)
    assert found.loc[("square M=2 > square M=1", "FT")].seeds_needed == 10
    assert found.loc[("square M=2 > square M=1", "FT")].seeds_needed_for == "paper"
    one = found.loc[("square M=2 > square M=4", "FT")]
    assert (one.verdict, one.n, one.effect) == (NEEDS_SEEDS, 1, 92.0 - 88.0)
    assert claims.count(found.reset_index()) == "at smoke, 1–3 seeds: 1 holds, 1 reversed, 1 unresolved, " \
                                                "1 needs seeds (one seed) of 4"
    assert set(found["source"]) == {table3().claims[0].source}


def test_the_table_renders_its_claims_section_csv_and_forest_plot(tmp_path):
    results, plan = write_results(tmp_path, table3(), OURS)
    paths = render(plan)
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    assert "**Claims of Table 3 (scale smoke).**" in md
    assert "[1] square M=2 > square M=1" in md and "| holds" in md and "| reversed" in md
    assert "Count: at smoke, 1–3 seeds: 1 holds, 1 reversed, 1 unresolved" in md
    assert r"\label{tab:table3-claims}" in tex and "unresolved" in tex
    csv = pd.read_csv(paths["claims.csv"])
    assert list(csv.columns) == claims.COLUMNS and len(csv) == 4
    assert paths["claims.png"].stat().st_size > 10_000 and paths["claims.pdf"].exists()


def test_marks_of_the_cells_carry_into_the_claim(tmp_path):
    # M=1's LIN below its control (10 -> 95): ‡ on every LIN comparison naming M=1, not on FT
    ours = {**OURS, ("square M=1", "linprobe"): [1.0, 2.0, 3.0]}
    results, plan = write_results(tmp_path, table3(), ours)
    runs = read_runs(plan, results)
    found = claims.check(plan, runs, collect(plan, runs)).set_index(["statement", "metric"])
    assert found.loc[("square M=2 > square M=1", "LIN")].marks == "‡"
    assert found.loc[("square M=2 > square M=1", "FT")].marks == ""


def test_two_datasets_that_ran_as_one_are_counted_once(tmp_path):
    study = load_study("table2")  # cifar10 and imagenet100 both run on the stand-in at smoke
    ours = {("patch-raster", "linprobe"): [50.0, 51.0], ("patch-random", "linprobe"): [60.0, 62.0],
            ("patch-raster", "finetune"): [70.0, 70.0], ("patch-random", "finetune"): [71.0, 69.0]}
    results, plan = write_results(tmp_path, study, ours, seeds=(0, 1))
    runs = read_runs(plan, results)
    found = claims.check(plan, runs, collect(plan, runs))
    assert len(found) == 4 and list(found["same_runs_as"]) == ["", "", "cifar10", "cifar10"]
    assert claims.count(found) == "at smoke, 2 seeds: 1 holds, 0 reversed, 1 unresolved of 2"  # LIN [10, 11]: [+4.1, +16.9]
    header, rows, _ = claims.lines(found)
    assert len(rows) == 2 and rows[0][2] == "cifar10 · imagenet100"
    assert "Every comparison ran on mnist5k, which stands in for the paper's datasets at this scale" in " ".join(_)
    assert rows[0][5] == f"{75.53 - 55.53:+.2f} · {53.02 - 49.35:+.2f}"


def test_a_published_number_is_judged_only_at_paper_scale(tmp_path):
    study = load_study("table8")
    ours = {("RandSAC-Square 16->4 ViT-B", "linprobe"): [70.0, 71.0, 72.0],
            ("RandSAC-Square 16->4 ViT-B", "finetune"): [83.0, 84.0, 85.0]}
    for scale, verdict in (("smoke", NOT_COMPARABLE), ("paper", HOLDS)):
        results, plan = write_results(tmp_path / scale, study, ours, scale=scale)
        runs = read_runs(plan, results)
        found = claims.check(plan, runs, collect(plan, runs)).set_index(["statement", "metric"])
        row = found.loc[("RandSAC-Square 16->4 ViT-B > iGPT-L", "LIN")]
        assert row.verdict == verdict and row.effect == pytest.approx(71.0 - 65.2)
        assert ("RandSAC-Square 16->4 ViT-B > BEiT ViT-B", "LIN") not in found.index  # BEiT published no LIN


def test_the_summary_over_every_table_that_has_run(tmp_path):
    results, plan = write_results(tmp_path, table3(), OURS)
    plan.write(results.table("table3", "plan.json"))
    paths = summary.write(results)
    text = paths["md"].read_text()
    assert text.startswith("# The paper's claims, checked\n\n**at smoke, 1–3 seeds: 1 holds, 1 reversed")
    assert "Table 3 (scale smoke)" in text and paths["png"].stat().st_size > 10_000
    assert len(pd.read_csv(paths["csv"])) == 4
