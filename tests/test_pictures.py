"""The pictures command: a pre-trained run's reconstructions, drawn again."""
import numpy as np
import pytest
import yaml
from PIL import Image

from harness import pictures
from harness.core.config import dotted_to_nested
from harness.core.layout import RunFolder
from harness.plan.studies import expand, load_study


@pytest.mark.integration  # a pre-training stage
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
