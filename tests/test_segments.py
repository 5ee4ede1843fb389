"""Square segments and serialization: coverage, shapes, per-sample randomness."""
import pytest
import torch

from harness.config import SegmentConfig
from harness.segments import Serializer, serialize, square_segments


@pytest.mark.parametrize("grid,size", [(8, 1), (8, 2), (8, 4), (14, 7), (6, 3)])
def test_square_partition_covers_grid_exactly(grid, size):
    ids = square_segments(grid, size).reshape(grid, grid)
    k = (grid // size) ** 2
    assert sorted(ids.unique().tolist()) == list(range(k))
    assert (torch.bincount(ids.flatten()) == size * size).all()  # every segment has M*M tokens
    for s in range(k):  # each segment is one M x M square
        rows, cols = (ids == s).nonzero(as_tuple=True)
        assert rows.max() - rows.min() == size - 1 and cols.max() - cols.min() == size - 1
        assert rows.min() % size == 0 and cols.min() % size == 0


def test_square_ids_follow_raster_order_of_squares():
    ids = square_segments(4, 2).reshape(4, 4)
    assert ids.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


@pytest.mark.parametrize("grid,size", [(8, 3), (8, 5), (8, 0)])
def test_square_size_must_divide_grid(grid, size):
    with pytest.raises(ValueError, match="must divide"):
        square_segments(grid, size)


def test_random_serialization_is_a_permutation_of_segments_per_sample():
    ids = square_segments(8, 2)
    ranks = serialize(ids, 32, "random", torch.Generator().manual_seed(0))
    assert ranks.shape == (32, 64)
    for b in range(32):
        # tokens of one segment share a rank, and the ranks are a permutation of 0..K-1
        assert torch.equal(ranks[b].unique(), torch.arange(16))
        for s in range(16):
            assert ranks[b, ids == s].unique().numel() == 1
    assert len({tuple(r.tolist()) for r in ranks}) > 1  # independent order per sample


def test_raster_serialization_is_fixed():
    ranks = serialize(square_segments(8, 1), 3, "raster")
    assert torch.equal(ranks, torch.arange(64).expand(3, -1))


def test_random_order_is_uniform_over_first_segment():
    ranks = serialize(square_segments(4, 2), 4000, "random", torch.Generator().manual_seed(1))
    first = (ranks == 0).float().reshape(4000, 2, 2, 2, 2)[:, :, 0, :, 0].reshape(4000, 4).argmax(1)
    counts = torch.bincount(first, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)


def test_serializer_counts_segments():
    assert Serializer(SegmentConfig(size=2), 8).num_segments == 16
    assert Serializer(SegmentConfig(size=4), 8).num_segments == 4
