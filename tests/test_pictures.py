"""Pictures: every segment type's serialization, and a pre-trained run's reconstructions."""
import numpy as np
import yaml
from PIL import Image

from harness import pictures
from harness.core.config import dotted_to_nested
from harness.core.layout import RunFolder
from harness.science.pictures import SHOWCASE, sample_panel, serializations
from harness.studies import expand, load_study


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


def test_reconstruction_of_a_pretrained_run(tmp_path, recorder, run_stage_here):
    """Pre-training draws its reconstructions and logs them; the command draws them again."""
    cell = expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": 1}))[1]
    rec = recorder()
    run_stage_here("pretrain", cell.config, tmp_path, rec)
    assert rec.artifacts == [tmp_path / "reconstruction.png"]
    img = np.asarray(Image.open(rec.artifacts[0]))
    assert img.shape[0] > 4 * 100 and img.std() > 10  # four images, not blank
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": cell.config.model_dump(mode="json")}))
    out = pictures.reconstruction(RunFolder(tmp_path), tmp_path / "again.png", n=3)
    assert np.asarray(Image.open(out)).shape[0] > 3 * 100
