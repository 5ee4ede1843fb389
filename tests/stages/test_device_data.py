"""Pre-training data kept on the device (harness.stages.device_data): the same pixels and labels
as the PIL datasets, the same item order, batches that depend on (seed, epoch, step) alone, and
the choice of path."""
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from harness.core.catalog import DataError
from harness.core.config import DataConfig, RunConfig
from harness.science import methods
from harness.stages import data
from harness.stages.data import EpochOrder, build_dataset, splits
from harness.stages.device_data import DeviceSet, uint8_images, wanted
from harness.plan.studies import expand, load_study

try:
    from cifar_tree import cifar_checksums, write_cifar_tree
except ImportError:  # tests/ is a package
    from tests.cifar_tree import cifar_checksums, write_cifar_tree

CPU = torch.device("cpu")


def cfg_of(method: str = "randsac", **data_fields) -> RunConfig:
    """Table 3's tiny M=2 cell with these `data` fields (and method)."""
    cfg = expand(load_study("table3"), "tiny", {"data": data_fields})[1].config
    return methods.validate({**cfg.model_dump(), "method": method})


def test_mnist5k_through_the_validation_and_subset_wrappers_gives_the_pil_pixels():
    cfg = cfg_of(name="mnist5k", validation=0.1, train_subset=300)
    train, _, _ = splits(cfg, None, None)
    images, labels = uint8_images(train)
    assert images.shape == (300, 1, 32, 32) and images.dtype == torch.uint8
    for i in (0, 17, 299):
        img, label = train[i]  # no transform: the PIL image
        assert np.array_equal(images[i, 0].numpy(), np.asarray(img)) and labels[i].item() == label


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tree_gives_the_pil_pixels_channels_first(tmp_path, name):
    write_cifar_tree(tmp_path, name, n_train=13, n_test=7)
    with cifar_checksums(tmp_path, name):
        ds = build_dataset(name, str(tmp_path), train=True)
    images, labels = uint8_images(ds)
    assert images.shape == (13, 3, 32, 32)
    for i in range(13):
        img, label = ds[i]
        assert np.array_equal(images[i].permute(1, 2, 0).numpy(), np.asarray(img)) and labels[i].item() == label


def test_a_folder_dataset_is_refused_with_what_works():
    with pytest.raises(DataError, match="mnist5k, cifar10, cifar100"):
        uint8_images(torch.utils.data.TensorDataset(torch.zeros(2, 3)))


def test_which_path_pretraining_takes():
    augment = methods.method("randsac")(cfg_of()).device_augment()
    assert not wanted(cfg_of(), CPU, augment)  # default: on CUDA only
    assert wanted(cfg_of(), torch.device("cuda"), augment)
    assert wanted(cfg_of(on_device=True), CPU, augment)
    assert not wanted(cfg_of(on_device=False), torch.device("cuda"), augment)
    dino = cfg_of("dino", on_device=True)
    assert methods.method("dino")(dino).device_augment() is None and not wanted(dino, CPU, None)  # multi-crop: PIL
    with pytest.raises(ValidationError, match="imagenet100 does not fit on the device"):
        DataConfig(name="imagenet100", on_device=True)


def test_on_device_is_runtime_not_part_of_the_signature():
    on, off = cfg_of(on_device=True), cfg_of()
    assert methods.signature(on, "pretrain") == methods.signature(off, "pretrain")


def test_batches_follow_the_epoch_order_and_depend_on_seed_epoch_step_only():
    cfg = cfg_of(train_subset=64, validation=None)
    method = methods.method("randsac")(cfg)
    train, _, _ = splits(cfg, None, None)
    device_set = DeviceSet.of(train, method.device_augment(), CPU)
    order = EpochOrder(len(device_set), seed=3, epoch=2).order()
    full = list(device_set.batches(order, 16, seed=3, epoch=2, first_step=0))
    assert len(full) == 4 and full[0][0].shape == (16, 1, 32, 32)
    assert torch.equal(torch.cat([y for _, y in full]), uint8_images(train)[1][order])  # the DataLoader's order
    resumed = list(device_set.batches(EpochOrder(64, 3, 2, start=32).order(), 16, seed=3, epoch=2, first_step=2))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(full[2:], resumed, strict=True))  # a resumed epoch
    other_epoch = next(device_set.batches(order, 16, seed=3, epoch=3, first_step=0))[0]
    assert not torch.equal(other_epoch, full[0][0])
    # the crops and flips are real: the augmented batch is not the plain normalised images
    info = data.dataset_info("mnist5k")
    plain = (uint8_images(train)[0][order[:16]].float() / 255 - info.mean[0]) / info.std[0]
    assert not torch.allclose(full[0][0], plain)


@pytest.mark.integration  # two pre-training stages
def test_without_crop_or_flip_both_paths_pretrain_bit_for_bit(tmp_path, recorder, run_stage_here):
    """With the smoke recipe's augmentation (whole image, no flip) the device path feeds the same
    batches as the DataLoader path: the same losses, epoch by epoch."""
    histories = []
    for on_device in (False, True):
        cfg = expand(load_study("table3"), "tiny", {"data": {"on_device": on_device},
                                                    "pretrain": {"crop_scale": None, "hflip": 0.0}})[1].config
        rec = recorder()
        run_stage_here("pretrain", cfg, tmp_path / str(on_device), rec)
        histories.append(rec.logged)
    assert histories[0] == histories[1] and len(histories[0]) == 2


@pytest.mark.integration  # linear-probe stages
def test_the_augmented_linear_probe_crops_on_the_device_as_torchvision_would_and_resumes_exactly(
        tmp_path, monkeypatch, tiny_cfg, recorder, run_stage_here, stop_after):
    """The paper recipe's probe (RandomResizedCrop + flip each step) on the device path: the crop of
    `probe_transform`, and a probe stopped mid-run continues with the metrics of a straight one."""
    from harness.science.transforms import probe_transform
    from harness.stages import device_data, linprobe

    info = data.dataset_info("mnist5k")
    on_device, pil = linprobe.device_augment(info, 32), probe_transform(info, 32).transforms
    crop, flip = pil[0], pil[1]
    assert (on_device.crop_scale, on_device.ratio, on_device.hflip) == (crop.scale, crop.ratio, flip.p)
    assert crop.interpolation == on_device.interpolation == "bicubic"

    made = []
    monkeypatch.setattr(device_data.DeviceSet, "of", classmethod(
        lambda cls, ds, augment, device: made.append(augment) or cls(*uint8_images(ds), augment, device)))
    cfg = tiny_cfg(**{"linprobe.epochs": 3, "linprobe.augment": True, "data.on_device": True})
    run_stage_here("pretrain", cfg, tmp_path / "parent")
    made.clear()  # pre-training's own
    straight = recorder()
    final = run_stage_here("linprobe", cfg, tmp_path / "straight", straight, tmp_path / "parent")
    assert len(made) == 1 and made[0].crop_scale == (0.08, 1.0)
    interrupted = recorder()
    with pytest.raises(stop_after.Stop):
        run_stage_here("linprobe", cfg, tmp_path / "resumed", interrupted, tmp_path / "parent",
                       checkpoint=stop_after(tmp_path / "resumed" / "checkpoint.pt", 1))
    assert run_stage_here("linprobe", cfg, tmp_path / "resumed", interrupted, tmp_path / "parent") == final
    assert [(s, m) for s, m in interrupted.logged if "resumed_at_epoch" not in m] == straight.logged
