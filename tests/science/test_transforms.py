"""Augmentations: shapes per kind, plain evaluation, fine-tuning's RandAugment on 1 channel."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.catalog import DatasetInfo, dataset_info
from harness.science import transforms
from harness.stages import data


def _image(name: str) -> Image.Image:
    rng = np.random.default_rng(0)
    if dataset_info(name).channels == 1:
        return Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["mnist5k", "cifar10"])
@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("kind", ["pretrain", "eval", "probe", "finetune", "finetune-ra"])
def test_transform_shapes(name, size, kind):
    info = dataset_info(name)
    make = {
        "pretrain": lambda: transforms.pretrain_transform(info, size),
        "eval": lambda: transforms.eval_transform(info, size),
        "probe": lambda: transforms.probe_transform(info, size),
        "finetune": lambda: transforms.finetune_transform(info, size, None),
        "finetune-ra": lambda: transforms.finetune_transform(info, size, "rand-m9-mstd0.5-inc1"),
    }[kind]()
    for _ in range(20):
        x = make(_image(name))
        assert x.shape == (info.channels, size, size) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_eval_transform_is_plain_normalization_at_native_size():
    info = dataset_info("cifar10")
    img = _image("cifar10")
    expected = (torch.from_numpy(np.array(img)).permute(2, 0, 1) / 255.0 - torch.tensor(info.mean)[:, None, None]) \
        / torch.tensor(info.std)[:, None, None]
    torch.testing.assert_close(transforms.eval_transform(info, 32)(img), expected)


def test_finetune_transform_has_no_colour_jitter_or_erasing():
    info = dataset_info("cifar10")
    for aa in (None, "rand-m9-mstd0.5-inc1"):
        names = [type(t).__name__ for t in transforms.finetune_transform(info, 32, aa).transforms]
        assert "ColorJitter" not in names and "RandomErasing" not in names


def test_finetune_randaugment_on_1_channel_matches_the_rgb_path():
    """timm's ops on an "L" image equal channel 0 of the same ops on its gray RGB copy."""
    gray = dataset_info("mnist5k")
    rgb = DatasetInfo("gray-rgb", 3, 32, 10, gray.mean * 3, gray.std * 3, 0, 0)
    img = Image.fromarray(data.MNIST5k(True).data[0])
    t1 = transforms.finetune_transform(gray, 32, "rand-m9-mstd0.5-inc1")
    t3 = transforms.finetune_transform(rgb, 32, "rand-m9-mstd0.5-inc1")
    for seed in range(100):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        a = t1(img)
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        b = t3(img.convert("RGB"))
        torch.testing.assert_close(a[0], b[0])


@pytest.mark.parametrize("name", ["mnist5k", "cifar10"])
def test_finetune_posterize_to_0_bits_gives_black_not_an_error(name):
    """Magnitude noise can make timm keep 0 bits: Pillow 12 (pinned) gives black, Pillow 13 raises."""
    t = transforms.finetune_transform(dataset_info(name), 32, "rand-m9-mstd0.5-inc1")
    randaug = next(x for x in t.transforms if hasattr(x, "ops"))
    op = next(o for o in randaug.ops if o.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # level 10 -> keep 0 bits
    out = op(_image(name))
    assert out.mode == _image(name).mode and not np.asarray(out).any()
    pickle.loads(pickle.dumps(t))  # still picklable for data-loader workers


def _torchvision_twin(info: DatasetInfo, size: int, kind: str):
    """torchvision's pipeline of each transform written out in harness.science.transforms."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    tail = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if kind == "pretrain":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), interpolation=bicubic),
                          T.RandomHorizontalFlip(0.5), *tail])
    if kind == "pretrain-whole":
        return T.Compose([*([] if size == info.image_size else [T.Resize((size, size), interpolation=bicubic)]), *tail])
    if kind == "probe":
        return T.Compose([T.RandomResizedCrop(size, interpolation=bicubic), T.RandomHorizontalFlip(), *tail])
    if info.name.startswith("imagenet"):
        return T.Compose([T.Resize(int(size * 256 / 224), interpolation=bicubic), T.CenterCrop(size), *tail])
    return T.Compose([*([] if size == info.image_size else [T.Resize((size, size), interpolation=bicubic)]), *tail])


@pytest.mark.parametrize("name", ["mnist5k", "cifar10", "imagenet100"])
@pytest.mark.parametrize("size", [16, 32, 48])
@pytest.mark.parametrize("kind", ["pretrain", "pretrain-whole", "probe", "eval"])
def test_transforms_equal_torchvisions_to_the_bit(name, size, kind):
    """The same seed gives the same tensor as torchvision's transforms, on square images and on
    the tall and wide ones an ImageNet folder holds (crop windows, their fall-back, short-side
    resize and centre crop)."""
    info = dataset_info(name)
    ours = {"pretrain": lambda: transforms.pretrain_transform(info, size),
            "pretrain-whole": lambda: transforms.pretrain_transform(info, size, crop_scale=None, hflip=0.0),
            "probe": lambda: transforms.probe_transform(info, size),
            "eval": lambda: transforms.eval_transform(info, size)}[kind]()
    twin = _torchvision_twin(info, size, kind)
    rng = np.random.default_rng(1)
    shapes = [(32, 32)] + ([(57, 91), (91, 57), (60, 13)] if name.startswith("imagenet") else [])
    for h, w in shapes:
        pixels = rng.integers(0, 256, (h, w) if info.channels == 1 else (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        for seed in range(60):
            torch.manual_seed(seed)
            a = ours(img)
            torch.manual_seed(seed)
            b = twin(img)
            assert a.dtype == b.dtype and torch.equal(a, b), (h, w, seed)
    pickle.loads(pickle.dumps(ours))  # data-loader workers get it pickled
