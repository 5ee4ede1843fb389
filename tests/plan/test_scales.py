"""Scales: paper scale is the paper's recipe."""
import pytest

from harness.core.config import dotted_to_nested
from harness.plan.studies import expand, load_study


def cells(scale="tiny", **dotted):
    return expand(load_study("table3"), scale, dotted_to_nested(dotted))


def test_paper_scale_is_the_paper_recipe():
    cfg = cells("paper")[1].config
    assert (cfg.data.name, cfg.data.image_size) == ("cifar10", 32)
    m = cfg.model
    assert (m.patch_size, m.embed_dim, m.depth, m.num_heads, m.decoder_depth) == (4, 192, 12, 3, 3)
    assert (cfg.pretrain.optimizer, cfg.pretrain.weight_decay, cfg.pretrain.base_lr) == ("adamw", 0.05, 1e-3)
    assert cfg.pretrain.lr == pytest.approx(1e-3 * 512 / 256)
    assert (cfg.linprobe.epochs, cfg.finetune.epochs) == (90, 100)
    f = cfg.finetune
    assert (f.drop_path, f.mixup, f.cutmix, f.label_smoothing) == (0.1, 0.8, 1.0, 0.1)
