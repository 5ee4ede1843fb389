"""Files written whole: as readable by the group as the user's umask allows (a shared results/)."""
import os
import stat

import pytest

from harness.core.files import write_atomic, write_text_atomic


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_as_readable_as_the_umask_allows(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "pretrain.json", "{}")
        write_atomic(tmp_path / "encoder.pt", lambda f: f.write(b"weights"))  # checkpoints and encoders
    finally:
        os.umask(old)
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("pretrain.json", "encoder.pt")} == {mode}
    assert os.umask(old) == old  # reading the mask left it as it was
