"""Device augmentation: crop boxes distributed as torchvision's, pixels as its tensor path, DeviceAugment."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.transforms.v2 import functional as TF

from harness.science.device_transforms import DeviceAugment, crop_params, resized_crop

try:
    from scipy.stats import ks_2samp
except ImportError:
    ks_2samp = None

RATIO = (3 / 4, 4 / 3)
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    if ks_2samp is not None:
        return float(ks_2samp(a, b).statistic)
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int, alpha: float = 0.001) -> float:
    """Asymptotic critical value of the two-sample KS statistic (conservative for discrete data)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def image(n=1, c=3, size=32, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def box(*values) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor([v]) for v in values)


# --------------------------------------------------------------------------- crop_params


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 1.0)])
def test_crop_params_distribution_matches_torchvision(scale):
    n, size = 20_000, 32
    top, left, h, w = (t.numpy() for t in crop_params(n, size, size, scale, RATIO, torch.Generator().manual_seed(1)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        img = torch.zeros(3, size, size)
        ref = np.array([transforms.RandomResizedCrop.get_params(img, list(scale), list(RATIO)) for _ in range(n)])
    ref_top, ref_left, ref_h, ref_w = ref.T
    assert (h >= 1).all() and (w >= 1).all() and (top + h <= size).all() and (left + w <= size).all()
    critical = ks_critical(n, n)
    for name, ours, theirs in [("area", h * w / size**2, ref_h * ref_w / size**2), ("aspect", w / h, ref_w / ref_h),
                               ("top", top, ref_top), ("left", left, ref_left)]:
        assert ks_statistic(ours, theirs) < critical, name


@pytest.mark.parametrize("height, width, ratio", [(32, 32, (3.0, 4.0)), (32, 32, (1 / 4, 1 / 3)), (20, 64, (3 / 4, 4 / 3))])
def test_crop_params_fallback_is_torchvisions_central_crop(height, width, ratio):
    scale = (0.99, 1.0)  # no attempt fits: the fallback, deterministic
    expected = transforms.RandomResizedCrop.get_params(torch.zeros(3, height, width), list(scale), list(ratio))
    boxes = torch.stack(crop_params(5, height, width, scale, ratio, torch.Generator().manual_seed(0)), dim=1)
    assert boxes.tolist() == [list(expected)] * 5


# --------------------------------------------------------------------------- resized_crop

# grid_sample and interpolate compute the same taps with the same weights (bicubic: a = -0.75 in
# both, border taps read the box's edge); only float rounding of the sampling positions differs:
# at most 5.3e-6 (of 1) over 1,200 random boxes and sizes 24/32/45, so 1e-5 for both modes.
@pytest.mark.parametrize("interpolation, tolerance", [("bilinear", 1e-5), ("bicubic", 1e-5)])
@pytest.mark.parametrize("size", [32, 45])
def test_resized_crop_matches_torchvision_tensor_path(interpolation, tolerance, size):
    img = image()
    top, left, h, w = 3, 5, 20, 17
    mode = transforms.InterpolationMode(interpolation)
    expected = TF.resized_crop(img[0].float(), top, left, h, w, [size, size], interpolation=mode, antialias=False)
    expected = (expected / 255).clamp(0, 1)
    ours = resized_crop(img, *box(top, left, h, w), size, interpolation)
    assert ours.shape == (1, 3, size, size) and ours.dtype == torch.float32
    assert (ours[0] - expected).abs().max() <= tolerance


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resized_crop_of_the_whole_image_is_the_image(interpolation):
    img = image(n=2)
    full = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.full((2,), 32), torch.full((2,), 32))
    assert torch.equal(resized_crop(img, *full, 32, interpolation), img.float() / 255)


def test_resized_crop_flip_mirrors_the_output():
    img = image(n=4)
    top, left, h, w = (torch.tensor(v) for v in ([0, 3, 10, 2], [0, 5, 1, 12], [32, 20, 15, 30], [32, 17, 22, 19]))
    flip = torch.tensor([True, False, True, True])
    plain = resized_crop(img, top, left, h, w, 32)
    flipped = resized_crop(img, top, left, h, w, 32, flip=flip)
    torch.testing.assert_close(flipped[flip], plain[flip].flip(-1))
    assert torch.equal(flipped[~flip], plain[~flip])


# --------------------------------------------------------------------------- DeviceAugment


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_device_augment_is_crop_flip_normalize():
    images = image(n=8)
    augment = DeviceAugment(MEAN, STD, 32, crop_scale=(0.2, 1.0), hflip=0.5)
    out = augment(images, torch.Generator().manual_seed(3))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32 and out.device == images.device

    generator = torch.Generator().manual_seed(3)  # the same draws, by hand
    crop = crop_params(8, 32, 32, (0.2, 1.0), RATIO, generator)
    flip = torch.rand(8, generator=generator) < 0.5
    torch.testing.assert_close(out, normalize(resized_crop(images, *crop, 32, "bicubic", flip)))


def test_device_augment_depends_only_on_the_generator_state():
    images = image(n=8)
    augment = DeviceAugment(MEAN, STD, 32)
    generator = torch.Generator().manual_seed(4)
    state = generator.get_state()  # as a checkpoint would keep it
    first, second = augment(images, generator), augment(images, generator)
    assert not torch.equal(first, second)
    generator.set_state(state)
    assert torch.equal(augment(images, generator), first)
    assert torch.equal(augment(images, generator), second)


def test_device_augment_without_crop_is_the_whole_normalized_image():
    images = image(n=4)
    out = DeviceAugment(MEAN, STD, 32, crop_scale=None, hflip=0.0)(images, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, normalize(images.float() / 255))
    resized = DeviceAugment(MEAN, STD, 48, crop_scale=None, hflip=0.0)(images, torch.Generator().manual_seed(5))
    expected = TF.resize(images.float(), [48, 48], interpolation=transforms.InterpolationMode.BICUBIC, antialias=False)
    torch.testing.assert_close(resized, normalize((expected / 255).clamp(0, 1)), atol=1e-4, rtol=0)


def test_device_augment_flips_without_crop():
    images = image(n=16)
    generator = torch.Generator().manual_seed(6)
    out = DeviceAugment(MEAN, STD, 32, crop_scale=None, hflip=0.5)(images, generator)
    flip = torch.rand(16, generator=torch.Generator().manual_seed(6)) < 0.5
    assert 0 < flip.sum() < 16
    expected = normalize(images.float() / 255)
    torch.testing.assert_close(out, torch.where(flip[:, None, None, None], expected.flip(-1), expected))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_augment_on_cuda_matches_cpu():
    images = image(n=64)
    augment = DeviceAugment(MEAN, STD, 32)
    on_cuda = augment(images.cuda(), torch.Generator().manual_seed(7))
    assert on_cuda.device.type == "cuda" and on_cuda.shape == (64, 3, 32, 32)
    on_cpu = augment(images, torch.Generator().manual_seed(7))
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, atol=1e-4, rtol=0)
