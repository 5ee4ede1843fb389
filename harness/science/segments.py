"""Segments and their serialization (paper section 3, appendix A.2).

The token grid (G x G tokens, raster order) is cut into segments, optionally grouped into a
hierarchy of partitions; each image then gets a serialization, the order in which its segments
are predicted. Everything downstream sees only `ranks`, a (B, N) tensor holding, for every
token, the position of its segment in that order (0 for the first segment). Tokens are never
moved: the masks alone carry the order, so segments of unequal size (blobs) need no padding
and no per-sample Python loop.

Segment types:
- square: M x M tokens (M=1: one token per segment); hierarchy = squares of squares.
- blob: K random Gaussians (A.2); each token joins the component of highest density;
  components that get no token drop out; hierarchy = a coarser Gaussian mixture over the
  segments' centroids.
- incoherent (`coherent: false`): a sample's segment sizes kept, token membership shuffled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.core.config import SegmentConfig

# Appendix A.2: positions in [-2, 2], means ~ U(-1.75, 1.75), standard deviations ~ U(0.5, 1).
BLOB_EXTENT, BLOB_MEAN, BLOB_STD = 2.0, 1.75, (0.5, 1.0)


@dataclass
class Segmentation:
    """Segment id of every token, and the partition of every unit at each hierarchy level.

    `segments` (B, N) holds ids in [0, K); an id may own no token (a blob that dropped out).
    `parents[l]` (B, K_l) maps each unit of level l (level 0: the segments) to its partition at
    level l + 1. A flat segmentation has no parents.
    """

    segments: torch.Tensor
    parents: list[torch.Tensor]
    num_ids: list[int]  # K_0 (segment ids), K_1, ... (partition ids per level)


def square_segments(grid: int, size: int) -> torch.Tensor:
    """Segment id (raster order of the squares) of every token of a grid x grid token grid."""
    if size <= 0 or grid % size:
        raise ValueError(f"square size M={size} must divide the {grid}x{grid} token grid")
    cells = torch.arange(grid).div(size, rounding_mode="floor")
    return (cells[:, None] * (grid // size) + cells[None, :]).flatten()


def token_positions(grid: int) -> torch.Tensor:
    """(N, 2) normalized (x, y) of every token: top-left (-2, -2), bottom-right (2, 2)."""
    coords = torch.linspace(-BLOB_EXTENT, BLOB_EXTENT, grid)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def gaussian_assign(points: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Sample k axis-aligned Gaussians per sample; the id of the densest one at each point.

    points: (B, P, 2) -> (B, P) component ids in [0, k).
    """
    b = points.shape[0]
    mean = (torch.rand(b, k, 2, generator=generator) * 2 - 1) * BLOB_MEAN
    lo, hi = BLOB_STD
    std = lo + (hi - lo) * torch.rand(b, k, 2, generator=generator)
    z = (points[:, :, None, :] - mean[:, None]) / std[:, None]  # (B, P, k, 2)
    log_density = -0.5 * z.pow(2).sum(-1) - std.log().sum(-1)[:, None]
    return log_density.argmax(dim=-1)


def blob_segments(grid: int, count: int, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, N) blob ids: the component of highest density of K sampled Gaussians (A.2)."""
    return gaussian_assign(token_positions(grid).expand(batch, -1, -1), count, generator)


def centroids(segments: torch.Tensor, num_ids: int, positions: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) mean position of each segment's tokens (0 for empty segments)."""
    b = segments.shape[0]
    sums = torch.zeros(b, num_ids, 2).scatter_add_(1, segments[..., None].expand(-1, -1, 2),
                                                   positions.expand(b, -1, -1))
    counts = torch.zeros(b, num_ids).scatter_add_(1, segments, torch.ones(segments.shape))
    return sums / counts.clamp(min=1)[..., None]


def shuffle_membership(segments: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Incoherent segments: the same segment sizes, token membership permuted per sample."""
    perm = torch.rand(segments.shape, generator=generator).argsort(dim=1)
    return segments.gather(1, perm)


def sample(cfg: SegmentConfig, grid: int, batch: int, generator: torch.Generator | None = None) -> Segmentation:
    """Segments (and partitions) of a batch, one independent sample per image."""
    if cfg.kind == "square":
        segments = square_segments(grid, cfg.size).expand(batch, -1).clone()
        num = (grid // cfg.size) ** 2
    else:
        segments, num = blob_segments(grid, cfg.count, batch, generator), cfg.count
    parents, num_ids = [], [num]
    below = segments
    for count in cfg.hierarchy:  # fine to coarse
        if cfg.kind == "square":
            side = grid // round(count ** 0.5)
            token_part = square_segments(grid, side).expand(batch, -1)
            parent = torch.zeros(batch, num_ids[-1], dtype=torch.long).scatter_(1, below, token_part)
            below = token_part
        else:
            parent = gaussian_assign(centroids(below, num_ids[-1], token_positions(grid)), count, generator)
            below = parent.gather(1, below)
        parents.append(parent)
        num_ids.append(count)
    if not cfg.coherent:
        segments = shuffle_membership(segments, generator)
    return Segmentation(segments, parents, num_ids)


def serialize(seg: Segmentation, order: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ranks (B, N): the position of each token's segment in a serialization.

    Hierarchical: partitions are visited in (random or raster) order and, inside a partition,
    its units in (random or raster) order, at every level; so all segments of one partition are
    contiguous. Segments that own no token are put last and never appear in the ranks.
    """
    if order not in ("random", "raster"):
        raise ValueError(f"unknown serialization order {order!r}; choose 'random' or 'raster'")
    b = seg.segments.shape[0]
    occupied = torch.zeros(b, seg.num_ids[0], dtype=torch.bool).scatter_(1, seg.segments, True)

    def keys(n: int) -> torch.Tensor:
        return torch.rand(b, n, generator=generator) if order == "random" else torch.arange(n, dtype=torch.float).expand(b, -1)

    # ancestors[l]: (B, K_0) id of each segment's partition at level l (level 0: itself)
    ancestors = [torch.arange(seg.num_ids[0]).expand(b, -1)]
    for parent in seg.parents:
        ancestors.append(parent.gather(1, ancestors[-1]))
    # sort segments by the finest key first, then stably by each coarser level's key
    perm = keys(seg.num_ids[0]).masked_fill(~occupied, float("inf")).argsort(dim=1, stable=True)
    for level in range(1, len(ancestors)):
        level_key = keys(seg.num_ids[level]).gather(1, ancestors[level])
        level_key = level_key.masked_fill(~occupied, float("inf"))
        perm = perm.gather(1, level_key.gather(1, perm).argsort(dim=1, stable=True))
    segment_rank = perm.argsort(dim=1)
    return segment_rank.gather(1, seg.segments)


class Serializer:
    """Samples segments and their serialization for a batch (pre-training only)."""

    def __init__(self, cfg: SegmentConfig, grid: int):
        self.cfg, self.grid = cfg, grid

    def segmentation(self, batch_size: int, generator: torch.Generator | None = None) -> Segmentation:
        return sample(self.cfg, self.grid, batch_size, generator)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return serialize(self.segmentation(batch_size, generator), self.cfg.order, generator)
