"""Configs and signatures: a run's signature is its config; bad input is refused with one clear line."""
import pytest

from harness.core.config import RunConfig, dotted_to_nested
from harness.science.methods import signature
from harness.plan.studies import ConfigError, expand, load_study


def cells(scale="tiny", **dotted):
    return expand(load_study("table3"), scale, dotted_to_nested(dotted))


def test_signature_is_the_config():
    a, b = cells()[1].config, cells()[1].config
    assert signature(a, "pretrain") == signature(b, "pretrain")
    changed = RunConfig.model_validate({**a.model_dump(), "seed": 1})
    assert signature(changed, "pretrain") != signature(a, "pretrain")
    # where the data lives and how many workers load it do not change what is computed
    moved = RunConfig.model_validate({**a.model_dump(), "data": {**a.data.model_dump(), "root": "/x", "num_workers": 4}})
    assert signature(moved, "pretrain") == signature(a, "pretrain")
    # an evaluation-only change keeps the pre-training run and changes the evaluation run
    probe = RunConfig.model_validate({**a.model_dump(), "linprobe": {**a.linprobe.model_dump(), "epochs": 7}})
    assert signature(probe, "pretrain") == signature(a, "pretrain")
    assert signature(probe, "linprobe") != signature(a, "linprobe")
    assert signature(probe, "finetune") == signature(a, "finetune")


@pytest.mark.parametrize("overrides,message", [
    ({"segments.size": 3}, "M=3 does not divide the 8x8 token grid"),
    ({"model.patch_size": 5}, "patch_size=5 does not divide data.image_size=32"),
    ({"pretrain.epochz": 2}, "pretrain.epochz: Extra inputs are not permitted"),
    ({"model.num_heads": 3}, "embed_dim=32 is not divisible by model.num_heads=3"),
    ({"pretrain.epochs": 0}, "pretrain.epochs: Input should be greater than 0"),
    ({"segments.order": "spiral"}, "segments.order: Input should be 'random' or 'raster'"),
    ({"model.patch_size": 1}, "pretrain.norm_pix_loss needs at least 2 values per patch"),  # the method's check
    ({"method": "byol"}, "unknown method 'byol'; methods are randsac, mae, dino, supervised"),
])
def test_bad_overrides_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        cells(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("study table3, cell cifar10: square M=")


@pytest.mark.parametrize("study,overrides,message", [
    ("table5", {"segments.count": 65}, "K=65 is larger than the 64 tokens"),
    ("table6", {"segments.hierarchy": [32]}, "32 partitions of 4 units"),
])
def test_bad_segments_of_other_tables(study, overrides, message):
    with pytest.raises(ConfigError, match=message):
        expand(load_study(study), "tiny", dotted_to_nested(overrides))
