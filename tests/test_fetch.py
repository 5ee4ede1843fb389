"""The fetch command: offline it fails cleanly; mnist5k needs nothing fetched."""
import subprocess
import sys
import urllib.error

import pytest
from torchvision.datasets import cifar as tv_cifar

from harness import fetch


def test_fetch_offline_fails_cleanly(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    assert fetch.main(["cifar10", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cifar10" in err and "network" in err and "Traceback" not in err


@pytest.mark.integration  # a fresh interpreter that imports torch: 7 CPU-seconds
def test_fetch_mnist5k_is_a_no_op_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "harness.fetch", "mnist5k", "--root", "/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "embedded" in out.stdout
