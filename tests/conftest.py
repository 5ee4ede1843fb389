import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """An empty results folder with its own sqlite MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "results"
    path.mkdir()
    return path
