"""Pictures: every segment type's serialization (a pre-trained run's reconstructions: test_pictures.py)."""
import numpy as np
from PIL import Image

from harness.science.drawing import SHOWCASE, sample_panel, serializations


def test_serializations_picture(tmp_path):
    out = serializations(tmp_path / "s.png")
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 100 and img.shape[1] > 8 * 100  # one panel per showcased segmentation
    assert img.std() > 20  # not blank


def test_partition_outline_follows_hierarchy():
    segments, ranks, partitions = sample_panel(SHOWCASE["square 16->4"], 8, 0)
    assert partitions is not None and len(np.unique(partitions)) == 4
    for p in np.unique(partitions):  # partitions are contiguous in the order
        r = np.unique(ranks[partitions == p])
        assert (np.diff(np.sort(r)) == 1).all()
