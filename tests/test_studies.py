"""All ten paper tables: studies expand at every scale, share runs, carry the paper's numbers."""
import csv
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.scales import SCALES
from harness.science import methods
from harness.studies import available_studies, expand, load_study, plan
from harness.tables import collect, wide

REPORTED = Path(__file__).resolve().parents[2] / "shared" / "paper" / "reported.csv"
STUDIES = [load_study(n) for n in available_studies()]


def test_one_study_per_table():
    assert [s.name for s in STUDIES] == [f"table{i}" for i in range(1, 11)]
    assert [s.table for s in STUDIES] == list(range(1, 11))


@pytest.mark.parametrize("scale", SCALES)
def test_every_study_expands_at_every_scale(scale):
    for study in STUDIES:
        cells = expand(study, scale)
        assert cells and len({(c.dataset, c.setting, c.seed) for c in cells}) == len(cells)


def test_cells_shared_between_tables_are_one_run():
    """Table 3 M=2, Table 4 square-random and Table 6 square 16 on CIFAR10 are one config."""
    def pretrain_sig(table, setting):
        (cell,) = [c for c in expand(load_study(table), "paper") if c.dataset == "cifar10" and c.setting == setting]
        return cell.signature("pretrain")

    sig = pretrain_sig("table3", "square M=2")
    assert sig == pretrain_sig("table4", "square-random") == pretrain_sig("table6", "square 16")
    assert pretrain_sig("table2", "patch-random") == pretrain_sig("table3", "square M=1") == \
        pretrain_sig("table4", "patch-random")
    assert pretrain_sig("table1", "patch-raster") == pretrain_sig("table2", "patch-raster")
    assert pretrain_sig("table5", "blob K=7") == pretrain_sig("table4", "blob-random") == \
        pretrain_sig("table6", "blob 7")
    runs = plan(STUDIES, "paper")
    requested = sum(len(c.stages(s.metrics)) for s in STUDIES for c in expand(s, "paper"))
    assert len(runs) < requested  # fewer runs than cells x stages: shared cells run once
    shared = [r for r in runs.values() if len({c.study for c in r.cells}) > 1]
    assert any({"table3", "table4", "table6"} <= {c.study for c in r.cells} for r in shared)


def test_paper_recipes_per_table():
    by = {s.name: {(c.dataset, c.setting): c.config for c in expand(s, "paper")} for s in STUDIES}
    t7 = by["table7"][("cifar100", "RandSAC-Blob 11->5")]
    assert (t7.model.embed_dim, t7.model.decoder_depth, t7.pretrain.epochs) == (384, 6, 1600)
    assert t7.segments.kind == "blob" and t7.segments.count == 11 and t7.segments.hierarchy == [5]
    assert by["table7"][("cifar10", "DINO")].method == "dino"
    assert methods.spec(by["table7"][("cifar10", "Supervised")].method).stages == ("finetune",)
    in100 = by["table2"][("imagenet100", "patch-random")]
    assert (in100.data.image_size, in100.model.patch_size, in100.model.embed_dim) == (224, 16, 384)
    assert (in100.model.decoder_depth, in100.model.decoder_num_heads) == (4, 12)  # doubled heads
    t8 = by["table8"][("imagenet1k", "RandSAC-Square 16->4 ViT-B")]
    assert (t8.data.image_size, t8.eval_size, t8.model.embed_dim, t8.model.decoder_depth) == (192, 224, 768, 8)
    assert t8.segments.size == 3 and t8.segments.hierarchy == [4]  # 16 squares of 3x3 on 12x12
    assert by["table6"][("imagenet100", "square 16")].segments.size == 4  # 256 px: a 16x16 grid
    assert {c.model.architecture for (_, _), c in by["table10"].items()} == {"two_stream", "masked", "skip"}
    assert {c.model.patch_size for c in by["table9"].values()} == {2, 4, 8}
    pixel = by["table1"][("cifar10", "pixel-raster")]
    assert pixel.model.patch_size == 1 and not pixel.pretrain.norm_pix_loss


def test_table7_baselines_pretrain_with_their_official_recipes():
    """'The MAE and DINO are pretrained using their official implementations': at paper scale
    their optimizer recipe is theirs, over the study's schedule; RandSAC's cells, the controls
    and what a user asks for are untouched."""
    table7 = load_study("table7")
    cells = {(c.setting, c.control): c.config for c in expand(table7, "paper") if c.dataset == "cifar10"}
    dino, mae = cells[("DINO", False)], cells[("MAE (75% mask)", False)]
    randsac = cells[("RandSAC-Square 16->4", False)]
    assert (dino.pretrain.base_lr, dino.pretrain.min_lr, dino.pretrain.weight_decay) == (5e-4, 1e-6, 0.04)
    assert dino.pretrain.betas == (0.9, 0.999) and dino.dino.weight_decay_end == 0.4
    assert (dino.dino.clip_grad, dino.dino.freeze_last_layer) == (3.0, 1)
    assert (mae.pretrain.base_lr, mae.pretrain.betas, mae.pretrain.mask_ratio) == (1.5e-4, (0.9, 0.95), 0.75)
    assert (randsac.pretrain.base_lr, randsac.pretrain.betas) == (1e-3, (0.9, 0.999))  # Table 16's
    for config in (dino, mae):  # same schedule as the study's RandSAC cells
        assert (config.pretrain.epochs, config.pretrain.batch_size, config.pretrain.warmup_epochs) == \
            (randsac.pretrain.epochs, randsac.pretrain.batch_size, randsac.pretrain.warmup_epochs)
    controls = {methods.signature(c, "linprobe") for (_, control), c in cells.items() if control}
    assert len(controls) == 1  # one random-init control: the baselines' recipes are pre-training only
    asked = {c.setting: c.config for c in expand(table7, "paper", {"pretrain": {"base_lr": 2e-4}})}
    assert asked["DINO"].pretrain.base_lr == asked["MAE (75% mask)"].pretrain.base_lr == 2e-4  # the user's word last
    by_override = {c.setting: c.config for c in expand(table7, "paper", {"method": "dino"})}
    assert by_override["RandSAC-Square 16->4"].pretrain.base_lr == 5e-4  # a cell made DINO gets DINO's recipe


@pytest.mark.skipif(not REPORTED.exists(), reason=f"{REPORTED} not found")
def test_studies_carry_every_reported_number():
    rows = list(csv.DictReader(REPORTED.open()))
    by_table = {s.table: s for s in STUDIES}
    for row in rows:
        study = by_table[int(row["table"])]
        numbers = study.paper if "not rerun" not in row["note"] else study.reported
        assert numbers[row["dataset"]][row["setting"]][row["metric"]] == pytest.approx(float(row["value"])), row
    counted = Counter(int(r["table"]) for r in rows)
    for study in STUDIES:
        ours = sum(len(m) for d in (*study.paper.values(), *study.reported.values()) for m in d.values())
        assert ours == counted.get(study.table, 0)  # nothing invented (Tables 9, 10: no numbers)


def test_tables_with_baselines_and_reported_rows():
    t7, t8 = load_study("table7"), load_study("table8")
    runs = pd.DataFrame([{"signature": c.signature("finetune"), "stage": "finetune", "value": 50.0}
                         for c in expand(t7, "tiny")], columns=["signature", "stage", "value"])
    long = collect(t7, "tiny", {}, runs)
    sup = long[(long.setting == "Supervised") & (long.paper_dataset == "cifar10")].set_index("metric")
    assert set(sup["dataset"]) == {"mnist5k"}  # what ran at tiny
    assert sup.loc["FT", "ours"] == 50.0 and sup.loc["LIN", "source"] == "not applicable"
    frame = wide(t7, long)
    assert frame.loc["Supervised", ("cifar10", "LIN", "ours")] == "—"
    assert frame.loc["DINO", ("cifar100", "LIN", "paper")] == "65.78"
    long8 = collect(t8, "tiny", {}, runs.iloc[:0])
    reported = long8[long8.source == "reported by others, not run"]
    assert "DINO ViT-B (reported)" in set(reported.setting) and reported.ours.isna().all()
    assert wide(t8, long8).loc["MAE ViT-B (reported)", ("imagenet1k", "LIN", "paper")] == "68.0"


def test_several_seeds_give_mean_and_std(tmp_path):
    from harness.studies import Study

    study = Study(**{**load_study("table3").model_dump(), "seeds": [0, 1]})
    cells = expand(study, "tiny")
    assert len(cells) == 8 and len({c.signature("pretrain") for c in cells if not c.control}) == 6
    values = {c.signature("linprobe"): 50.0 + 10 * c.seed for c in cells}
    runs = pd.DataFrame([{"signature": s, "stage": "linprobe", "value": v} for s, v in values.items()])
    long = collect(study, "tiny", {}, runs)
    lin = long[(long.metric == "LIN") & (long.setting == "square M=2")].iloc[0]
    assert lin["ours"] == 55.0 and lin["std"] == pytest.approx(7.0710678) and lin["n"] == 2
    assert wide(study, long).loc["LIN", ("square M=2", "ours")] == "55.0 ± 7.1 (2)"
    assert wide(study, long).loc["FT", ("square M=2", "ours")] == "—"  # no finetune run yet
    partial = collect(study, "tiny", {}, runs.iloc[:1])
    row = partial[(partial.n == 1)].iloc[0]
    assert row.n == 1 and row.seeds == 2  # printed as "(1/2 seeds)"


def test_captions_name_what_the_cells_ran():
    from harness.tables import caption

    def cap(name, scale):
        study = load_study(name)
        return caption(study, scale, [c.config for c in expand(study, scale)])

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


def test_seeds_from_the_command_line_replace_the_studys():
    cells = expand(load_study("table3"), "tiny", seeds=[0, 1, 2])
    assert sorted({c.seed for c in cells}) == [0, 1, 2] and len(cells) == 4 * 3
    from harness.workflow import Plan

    plan3 = Plan.from_snakemake_config({"scale": "tiny", "seeds": ["0", "1", "2"]}, ["table3"])  # as Snakemake parses
    assert plan3.cells.seeds == [0, 1, 2] and len(plan3.runs) == 3 * (3 * 3 + 2)
    assert "--seeds 0,1,2" in plan3.table_args(plan3.studies[0])


def test_control_signatures_are_shared_across_tables():
    """One random-init control per encoder and recipe: Tables 3, 5, 6 share it; Table 7's is its
    supervised baseline's fine-tuning run; Table 9's patch sizes have one each; Table 10's
    architectures (decoders) share one."""
    def controls(name, scale="paper", dataset="cifar10"):
        return [c for c in expand(load_study(name), scale) if c.control and c.dataset == dataset]

    for scale in ("tiny", "smoke", "paper"):
        (t3,) = controls("table3", scale)
        (t5,) = controls("table5", scale)
        (t6,) = controls("table6", scale)
        assert t3.setting == "random init" and t3.config.method == "random_init"
        for stage in ("linprobe", "finetune"):
            assert t3.signature(stage) == t5.signature(stage) == t6.signature(stage)
    (t7,) = controls("table7")
    supervised = next(c for c in expand(load_study("table7"), "paper") if c.setting == "Supervised" and c.dataset == "cifar10")
    assert t7.signature("finetune") == supervised.signature("finetune")
    assert t7.signature("finetune") != controls("table3")[0].signature("finetune")  # ViT-S/4, not ViT-Tiny
    t9 = controls("table9")
    assert [c.setting for c in t9] == [f"random init (P={p})" for p in (2, 4, 8)]
    assert len({c.signature("linprobe") for c in t9}) == 3
    assert t9[1].signature("linprobe") == controls("table3")[0].signature("linprobe")  # P=4 is Table 3's encoder
    assert len(controls("table10")) == 1
    runs = plan(STUDIES, "paper")
    control_runs = [r for r in runs.values() if r.config.method == "random_init"]
    assert any(len({c.study for c in r.cells}) >= 5 for r in control_runs)  # one run serves many tables
    assert not [c for c in expand(load_study("table3"), "paper", controls=False) if c.control]


def test_tables_show_the_control_and_mark_pretraining_that_did_not_learn():
    study = load_study("table3")
    cells = expand(study, "tiny")
    runs = pd.DataFrame(
        [{"signature": c.signature(s), "stage": s, "value": 60.0 + i} for i, c in enumerate(cells)
         for s in ("linprobe", "finetune")] +
        [{"signature": c.signature("pretrain"), "stage": "pretrain", "ratio": 0.95 if c.setting == "square M=4" else 0.5}
         for c in cells if not c.control])
    long = collect(study, "tiny", {}, runs)
    frame = wide(study, long)
    assert frame.loc["LIN", ("random init", "ours")] == "63.0" and frame.loc["LIN", ("random init", "paper")] == "—"
    # 62 and 61 are under the control's 63: ‡ (see the next test)
    assert frame.loc["LIN", ("square M=4", "ours")] == "62.0†‡" and frame.loc["LIN", ("square M=2", "ours")] == "61.0‡"
    assert set(long[long.setting == "random init"].source) == {"control"}
    from harness.tables import notes

    assert any("pre-training did not learn (loss ≥ 0.9 × floor" in n for n in notes(long))
    assert not any("did not learn" in n for n in notes(collect(study, "tiny", {}, runs[runs.ratio != 0.95])))


def test_tables_mark_a_cell_below_its_own_control(tmp_path):
    """‡ on a cell whose mean is under the mean of its own random-init control over the same
    seeds: Table 9's P=2 against "random init (P=2)", not against P=4's control; a note under
    the table, in the LaTeX and the figure; no mark when every cell is above."""
    from harness.tables import BELOW_CONTROL_NOTE, notes, tex_text

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
    long = collect(study, "tiny", {}, runs, seeds=[0, 1])
    frame = wide(study, long)
    cell_p2, cell_p4 = "patch-random P=2", "patch-random P=4"
    assert frame.loc["LIN", (cell_p2, "ours")] == "55.5 ± 0.7 (2)‡"
    assert frame.loc["LIN", (cell_p4, "ours")] == "45.5 ± 0.7 (2)"
    assert not frame.loc["LIN", ("random init (P=2)", "ours")].endswith("‡")
    assert BELOW_CONTROL_NOTE in notes(long) and r"$^\ddagger$" in tex_text(frame.loc["LIN", (cell_p2, "ours")])
    runs_above = runs.assign(value=runs.value.where(~runs.signature.isin(
        [c.signature(s) for c in cells if c.control for s in ("linprobe", "finetune")]), 0.0))
    assert BELOW_CONTROL_NOTE not in notes(collect(study, "tiny", {}, runs_above, seeds=[0, 1]))
    from harness.figures import draw

    (png,) = draw(study, long, "Table 9", tmp_path / "table9.png")
    assert png.stat().st_size > 10_000


def test_file_targets_plan_only_the_studies_they_belong_to():
    """A run's result file as the target: only the tables holding that run are planned, so an
    override another table varies (K, for Table 5) is not refused; an unknown run is one line."""
    from harness.studies import ConfigError
    from harness.workflow import CellOptions, studies_of_files

    overrides = {"segments": {"count": 9}}
    with pytest.raises(ConfigError, match="sets what table5 varies"):
        plan([load_study("table5")], "tiny", overrides)
    runs = plan([load_study("table10")], "tiny", overrides)
    sig = next(s for s, r in runs.items() if r.stage == "pretrain")
    assert studies_of_files([f"results/runs/{sig}/pretrain.json"], "tiny", overrides, CellOptions()) == ["table10"]
    assert studies_of_files(["results/tables/table3.md"], "tiny", {}, CellOptions()) == ["table3"]
    with pytest.raises(ConfigError, match="no study plans 000000000000 at scale tiny"):
        studies_of_files(["results/runs/000000000000/pretrain.json"], "tiny", {}, CellOptions())
