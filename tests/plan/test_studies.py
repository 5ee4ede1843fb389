"""All ten paper tables: studies expand at every scale, share runs, carry the paper's numbers."""
import csv
from collections import Counter
from pathlib import Path

import pytest

from harness.core.config import dotted_to_nested
from harness.plan.scales import SCALES
from harness.science import methods
from harness.plan.studies import available_studies, expand, load_study, plan

REPORTED = Path(__file__).resolve().parents[2] / "studies" / "reported.csv"  # the paper's numbers, each with its source
STUDIES = [load_study(n) for n in available_studies()]


def cells(scale="tiny", **dotted):
    return expand(load_study("table3"), scale, dotted_to_nested(dotted))


def test_table3_cells():
    cs = cells()
    assert [c.setting for c in cs] == ["square M=1", "square M=2", "square M=4", "random init"]
    assert {c.dataset for c in cs} == {"cifar10"}
    assert [c.config.segments.size for c in cs[:3]] == [1, 2, 4] and not any(c.control for c in cs[:3])
    assert all(c.config.segments.order == "random" for c in cs)
    control = cs[3]
    assert control.control and control.config.method == "random_init"
    assert control.stages(["lin", "ft"]) == ["linprobe", "finetune"]  # no pre-training
    assert control.config.model == cs[1].config.model and control.config.finetune == cs[1].config.finetune


def test_plan_dedups_same_config():
    study = load_study("table3")
    runs = plan([study, study], "tiny")
    assert sorted(r.stage for r in runs.values()) == ["finetune"] * 4 + ["linprobe"] * 4 + ["pretrain"] * 3
    assert sorted(r.stage for r in plan([study], "tiny", controls=False).values()) == \
        ["finetune"] * 3 + ["linprobe"] * 3 + ["pretrain"] * 3
    for r in runs.values():
        if r.parent:
            assert runs[r.parent].stage == "pretrain"


def test_one_study_per_table_and_every_table_of_the_paper():
    assert [s.name for s in STUDIES] == [f"table{s.table}" for s in STUDIES]  # named by number, in order
    assert sorted(s.table for s in STUDIES) == [s.table for s in STUDIES]
    assert {s.table for s in STUDIES} >= set(range(1, 11))  # the paper's ten


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
    assert methods.method(by["table7"][("cifar10", "Supervised")].method).stages == ("finetune",)
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
    assert (mae.pretrain.base_lr, mae.pretrain.betas, mae.mae.mask_ratio) == (1.5e-4, (0.9, 0.95), 0.75)
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


def test_table7_baselines_at_smoke_pretrain_at_their_measured_learning_rates():
    """At smoke RandSAC's 4.8e-2 left MAE's probe on the random-init control and DINO's loss at
    ln(out_dim) (docs/findings.md): each baseline has its own rate, RandSAC keeps smoke's."""
    cells = {c.setting: c.config for c in expand(load_study("table7"), "smoke") if not c.control}
    assert cells["MAE (75% mask)"].pretrain.base_lr == 1.5e-2
    assert cells["DINO"].pretrain.base_lr == 5e-3
    assert cells["RandSAC-Square 16->4"].pretrain.base_lr == 4.8e-2


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
