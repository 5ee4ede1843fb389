"""Segments and their serialization (paper section 3).

The token grid (G x G tokens, raster order) is cut into segments; each image then gets a
serialization: the order in which its segments are predicted. Everything downstream sees only
`ranks`, a (B, N) tensor holding, for every token, the position of its segment in that order
(0 for the first segment). Tokens are never moved: the masks alone carry the order, so
segments of unequal size need no padding.
"""
from __future__ import annotations

import torch

from harness.config import SegmentConfig


def square_segments(grid: int, size: int) -> torch.Tensor:
    """Segment id (raster order of the squares) of every token of a grid x grid token grid.

    Square segments of M x M tokens (section 3.2): K = (grid / M)^2 segments.
    """
    if size <= 0 or grid % size:
        raise ValueError(f"square size M={size} must divide the {grid}x{grid} token grid")
    rows = torch.arange(grid).div(size, rounding_mode="floor")
    per_row = grid // size
    return (rows[:, None] * per_row + rows[None, :]).flatten()


def serialize(segment_ids: torch.Tensor, batch_size: int, order: str,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Ranks (B, N) of a serialization of the given segments, one independent order per sample.

    order="raster": segments in the order of their ids; order="random": a uniformly random
    permutation of the segments for each sample (section 3.1, stochastic serialization).
    """
    num_segments = int(segment_ids.max()) + 1
    ids = segment_ids.expand(batch_size, -1)
    if order == "raster":
        return ids.clone()
    if order == "random":
        keys = torch.rand(batch_size, num_segments, generator=generator)
        segment_rank = keys.argsort(dim=1).argsort(dim=1)
        return segment_rank.gather(1, ids)
    raise ValueError(f"unknown serialization order {order!r}; choose 'random' or 'raster'")


class Serializer:
    """Samples the serialization of a batch for one config (pre-training only)."""

    def __init__(self, cfg: SegmentConfig, grid: int):
        self.cfg = cfg
        self.segment_ids = square_segments(grid, cfg.size)

    @property
    def num_segments(self) -> int:
        return int(self.segment_ids.max()) + 1

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return serialize(self.segment_ids, batch_size, self.cfg.order, generator)
