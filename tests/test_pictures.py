"""Pictures: every segment type's serialization, and a pre-trained run's reconstructions."""
import numpy as np
from PIL import Image

from harness import pictures, pretrain
from harness.config import dotted_to_nested
from harness.studies import expand, load_study
from test_engine import Recorder


def test_serializations_picture(tmp_path):
    out = pictures.serializations(tmp_path / "s.png")
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 100 and img.shape[1] > 8 * 100  # one panel per showcased segmentation
    assert img.std() > 20  # not blank


def test_partition_outline_follows_hierarchy():
    segments, ranks, partitions = pictures.sample_panel(pictures.SHOWCASE["square 16->4"], 8, 0)
    assert partitions is not None and len(np.unique(partitions)) == 4
    for p in np.unique(partitions):  # partitions are contiguous in the order
        r = np.unique(ranks[partitions == p])
        assert (np.diff(np.sort(r)) == 1).all()


def test_reconstruction_of_a_pretrained_run(tmp_path):
    cell = expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": 1}))[1]
    pretrain.run(cell.config, tmp_path, Recorder())
    out = pictures.reconstruction(cell.config, tmp_path, n=3)
    img = np.asarray(Image.open(out))
    assert out.name == "reconstruction.png" and img.shape[0] > 3 * 100 and img.std() > 10
