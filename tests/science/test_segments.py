"""Segments and serialization: coverage, blob sampling (A.2), incoherence, hierarchy, ranks."""
import pytest
import torch

from harness.core.config import SegmentConfig
from harness.science.segments import (Segmentation, Serializer, blob_segments, sample, serialize, square_segments,
                              token_positions)

G = torch.Generator


def flat(segments: torch.Tensor) -> Segmentation:
    return Segmentation(segments, [], [int(segments.max()) + 1])


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
    ranks = serialize(flat(ids.expand(32, -1)), "random", G().manual_seed(0))
    assert ranks.shape == (32, 64)
    for b in range(32):
        # tokens of one segment share a rank, and the ranks are a permutation of 0..K-1
        assert torch.equal(ranks[b].unique(), torch.arange(16))
        for s in range(16):
            assert ranks[b, ids == s].unique().numel() == 1
    assert len({tuple(r.tolist()) for r in ranks}) > 1  # independent order per sample


def test_raster_serialization_is_fixed():
    ranks = serialize(flat(square_segments(8, 1).expand(3, -1)), "raster")
    assert torch.equal(ranks, torch.arange(64).expand(3, -1))


def test_random_order_is_uniform_over_first_segment():
    ranks = serialize(flat(square_segments(4, 2).expand(4000, -1)), "random", G().manual_seed(1))
    first = ranks.reshape(4000, 4, 4)[:, ::2, ::2].reshape(4000, 4).argmin(1)
    counts = torch.bincount(first, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)


def test_token_positions_span_minus_two_to_two():
    pos = token_positions(8)
    assert pos[0].tolist() == [-2.0, -2.0] and pos[-1].tolist() == [2.0, 2.0]
    assert pos[1, 0] > pos[0, 0] and pos[8, 1] > pos[0, 1]  # x grows along a row, y down the rows


def test_blob_assignment_is_the_densest_gaussian():
    """Recompute A.2 by hand from the same random draws."""
    k, grid = 5, 8
    ids = blob_segments(grid, k, 3, G().manual_seed(7))
    g = G().manual_seed(7)
    mean = (torch.rand(3, k, 2, generator=g) * 2 - 1) * 1.75
    std = 0.5 + 0.5 * torch.rand(3, k, 2, generator=g)
    assert mean.abs().max() <= 1.75 and std.min() >= 0.5 and std.max() <= 1.0
    pos = token_positions(grid)
    for b in range(3):
        dens = torch.stack([torch.distributions.Normal(mean[b, j], std[b, j]).log_prob(pos).sum(-1)
                            for j in range(k)], dim=1)
        assert torch.equal(ids[b], dens.argmax(1))


def test_blobs_vary_in_number_and_size_and_cover_the_grid():
    ids = blob_segments(8, 11, 200, G().manual_seed(0))
    counts = torch.stack([torch.bincount(row, minlength=11) for row in ids])
    present = (counts > 0).sum(1)
    assert counts.sum(1).eq(64).all()  # every token in exactly one blob
    assert present.min() < 11 and present.max() <= 11  # empty components drop out
    assert len({tuple(sorted(c.tolist())) for c in counts}) > 100  # sizes differ per image


def test_blob_ranks_are_contiguous_despite_empty_components():
    seg = sample(SegmentConfig(kind="blob", count=11), 8, 64, G().manual_seed(0))
    ranks = serialize(seg, "random", G().manual_seed(1))
    for b in range(64):
        present = seg.segments[b].unique().numel()
        assert torch.equal(ranks[b].unique(), torch.arange(present))
        for s in seg.segments[b].unique():  # one rank per blob
            assert ranks[b, seg.segments[b] == s].unique().numel() == 1


def test_incoherent_segments_keep_sizes_and_lose_coherence():
    cfg = SegmentConfig(kind="blob", count=5)
    coherent = sample(cfg, 8, 50, G().manual_seed(3)).segments
    shuffled = sample(cfg.model_copy(update={"coherent": False}), 8, 50, G().manual_seed(3)).segments
    for a, b in zip(coherent, shuffled):
        assert torch.equal(torch.bincount(a, minlength=5), torch.bincount(b, minlength=5))

    def neighbours_alike(ids):  # share of horizontal neighbours in the same segment
        grid = ids.reshape(-1, 8, 8)
        return (grid[:, :, 1:] == grid[:, :, :-1]).float().mean().item()

    assert neighbours_alike(coherent) > 0.7 > 0.45 > neighbours_alike(shuffled)


def hierarchy_contiguity(seg: Segmentation, ranks: torch.Tensor, level_parent) -> None:
    """All segments of one partition occupy consecutive ranks."""
    for b in range(ranks.shape[0]):
        part_of_token = level_parent[b].gather(0, seg.segments[b])
        for p in part_of_token.unique():
            r = ranks[b, part_of_token == p].unique().sort().values
            assert torch.equal(r, torch.arange(r[0], r[0] + len(r))), "a partition's segments are not contiguous"


def test_square_hierarchy_16_to_4_is_squares_of_squares_and_contiguous():
    seg = sample(SegmentConfig(size=2, hierarchy=[4]), 8, 32, G().manual_seed(0))
    quadrant = square_segments(8, 4)
    for b in range(32):
        assert torch.equal(seg.parents[0][b].gather(0, seg.segments[b]), quadrant)  # partitions are 4x4 squares
    ranks = serialize(seg, "random", G().manual_seed(0))
    hierarchy_contiguity(seg, ranks, seg.parents[0])
    # partitions are visited in random order
    first_quadrant = {int(quadrant[(ranks[b] == 0)][0]) for b in range(32)}
    assert len(first_quadrant) > 1


@pytest.mark.parametrize("count,parts", [(7, [3]), (16, [4]), (11, [5]), (16, [8, 3])])
def test_blob_hierarchy_groups_segments_and_is_contiguous(count, parts):
    seg = sample(SegmentConfig(kind="blob", count=count, hierarchy=parts), 8, 32, G().manual_seed(count))
    assert [p.shape[1] for p in seg.parents] == [count, *parts[:-1]]
    ranks = serialize(seg, "random", G().manual_seed(1))
    ancestor = torch.arange(count).expand(32, -1)
    for parent in seg.parents:  # contiguity at every depth
        ancestor = parent.gather(1, ancestor)
        hierarchy_contiguity(seg, ranks, ancestor)


def test_flat_serialization_is_the_depth_one_case():
    """With a hierarchy of one partition per segment, the order equals the flat order."""
    segments = square_segments(8, 2).expand(16, -1)
    flat_seg = flat(segments)
    identity = Segmentation(segments, [torch.arange(16).expand(16, -1)], [16, 16])
    raster = serialize(flat_seg, "raster")
    assert torch.equal(serialize(identity, "raster"), raster)
    # random: same marginal structure (a permutation of the segments), hierarchy adds nothing
    r = serialize(identity, "random", G().manual_seed(0))
    assert all(torch.equal(row.unique(), torch.arange(16)) for row in r)


def test_raster_hierarchy_visits_partitions_in_order():
    seg = sample(SegmentConfig(size=2, hierarchy=[4], order="raster"), 8, 1)
    ranks = serialize(seg, "raster").reshape(8, 8)
    assert ranks[:4, :4].max() < ranks[:4, 4:].min()  # top-left quadrant before top-right
    assert ranks[:2, :2].unique().item() == 0 and ranks[:2, 2:4].unique().item() == 1


@pytest.mark.parametrize("cfg,message", [
    (dict(size=3), "M=3 does not divide the 8x8 token grid"),
    (dict(size=8), "nothing to predict"),
    (dict(kind="blob", count=65), "K=65 is larger than the 64 tokens"),
    (dict(kind="blob"), "blob segments need segments.count"),
    (dict(kind="blob", count=4, hierarchy=[5]), "5 partitions of 4 units"),
    (dict(size=2, hierarchy=[3]), "3 square partitions do not tile"),
    (dict(size=4, hierarchy=[16]), "16 partitions of 4 units"),
    (dict(kind="blob", count=7, hierarchy=[3], coherent=False), "cannot be grouped"),
])
def test_segment_config_checks(cfg, message):
    with pytest.raises(ValueError, match=message):
        SegmentConfig(**cfg).check(8)


def test_serializer_shapes():
    for cfg in (SegmentConfig(size=2), SegmentConfig(kind="blob", count=7, hierarchy=[3]),
                SegmentConfig(kind="blob", count=9, coherent=False)):
        ranks = Serializer(cfg, 8)(5)
        assert ranks.shape == (5, 64) and ranks.min() == 0
