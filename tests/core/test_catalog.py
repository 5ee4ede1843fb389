"""The dataset catalog: unknown names list the known ones."""
import pytest

from harness.core.catalog import DATASETS, DataError, dataset_info
from harness.stages.data import check_data


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match="mnist5k, cifar10, cifar100"):
        dataset_info("imagenet")
    with pytest.raises(ValueError):
        check_data("imagenet", None)
    assert [dataset_info(n).name for n in DATASETS] == list(DATASETS)
