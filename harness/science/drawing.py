"""Pictures like the paper's Figures 2 and 3, and reconstructions, drawn from tensors.

A serialization panel shows the image's token grid: each segment a colour, its place in the
order as a number (and as shade: earlier is darker), partitions outlined. A reconstruction
panel shows input, serialization and the prediction de-normalized with each target patch's own
mean and variance (the first segment, never predicted, shows its input).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness.core.catalog import DatasetInfo  # noqa: E402
from harness.core.config import SegmentConfig  # noqa: E402
from harness.science.segments import Serializer, serialize  # noqa: E402

SHOWCASE = {
    "patch-raster": SegmentConfig(size=1, order="raster"),
    "patch-random": SegmentConfig(size=1),
    "square M=2": SegmentConfig(size=2),
    "square 16->4": SegmentConfig(size=2, hierarchy=[4]),
    "blob K=5": SegmentConfig(kind="blob", count=5),
    "blob 7->3": SegmentConfig(kind="blob", count=7, hierarchy=[3]),
    "blob 16->8->3": SegmentConfig(kind="blob", count=16, hierarchy=[8, 3]),
    "shuffled K=5": SegmentConfig(kind="blob", count=5, coherent=False),
}


def draw_serialization(ax, segments: np.ndarray, ranks: np.ndarray, partitions: np.ndarray | None,
                       image: np.ndarray | None = None, title: str = "") -> None:
    """One panel: segments (G, G) coloured, ranks written, partition borders drawn."""
    grid = segments.shape[0]
    cmap = plt.get_cmap("tab20")
    colours = np.array([cmap(s % 20)[:3] for s in segments.flatten()]).reshape(grid, grid, 3)
    shade = 0.45 + 0.55 * (ranks / max(1, ranks.max()))[..., None]  # earlier segments darker
    rgb = colours * shade
    if image is not None:  # blend with the image, resized to the grid's extent
        ax.imshow(image, cmap="gray", extent=(0, grid, grid, 0), interpolation="nearest")
        ax.imshow(np.concatenate([rgb, np.full((grid, grid, 1), 0.55)], axis=2), extent=(0, grid, grid, 0))
    else:
        ax.imshow(rgb, extent=(0, grid, grid, 0), interpolation="nearest")
    if grid <= 16:
        for (r, c), rank in np.ndenumerate(ranks):
            first = (ranks == rank).argmax()
            if np.ravel_multi_index((r, c), ranks.shape) == first:  # one number per segment
                ax.text(c + 0.5, r + 0.5, str(rank + 1), ha="center", va="center", fontsize=7, color="white")
    if partitions is not None:  # outline partition borders
        for r in range(grid):
            for c in range(grid):
                if c + 1 < grid and partitions[r, c] != partitions[r, c + 1]:
                    ax.plot([c + 1, c + 1], [r, r + 1], color="black", lw=2)
                if r + 1 < grid and partitions[r, c] != partitions[r + 1, c]:
                    ax.plot([c, c + 1], [r + 1, r + 1], color="black", lw=2)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def sample_panel(cfg: SegmentConfig, grid: int, seed: int):
    """(segments, ranks, coarsest partitions or None) of one sampled image."""
    serializer = Serializer(cfg, grid)
    g = torch.Generator().manual_seed(seed)
    seg = serializer.segmentation(1, g)
    ranks = serialize(seg, cfg.order, g)[0].reshape(grid, grid).numpy()
    partitions = None
    if seg.parents:
        ids = seg.segments[0]
        for parent in seg.parents:
            ids = parent[0].gather(0, ids)
        partitions = ids.reshape(grid, grid).numpy()
    return seg.segments[0].reshape(grid, grid).numpy(), ranks, partitions


def serializations(out: Path, grid: int = 8, seed: int = 0, image: np.ndarray | None = None) -> Path:
    fig, axes = plt.subplots(1, len(SHOWCASE), figsize=(2.2 * len(SHOWCASE), 2.6))
    for ax, (name, cfg) in zip(axes, SHOWCASE.items()):
        segments, ranks, partitions = sample_panel(cfg, grid, seed)
        draw_serialization(ax, segments, ranks, partitions, image, name)
    fig.suptitle("Segments (colour), serialization order (number; earlier is darker), partitions (outline)",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def reconstruction_figure(imgs: torch.Tensor, segments: torch.Tensor, ranks: torch.Tensor,
                          recon: torch.Tensor, info: DatasetInfo, out: Path) -> Path:
    """Input | serialization | prediction, one row per image: imgs and recon (B, C, H, W) in
    normalized units, segments and ranks (B, N) on the square token grid."""
    n, grid = imgs.shape[0], math.isqrt(segments.shape[1])
    mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]

    def show(x):
        x = (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        return x[..., 0] if x.shape[-1] == 1 else x

    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(show(imgs[i]), cmap="gray")
        draw_serialization(axes[i, 1], segments[i].reshape(grid, grid).cpu().numpy(),
                           ranks[i].reshape(grid, grid).cpu().numpy(), None, None, "serialization" if i == 0 else "")
        axes[i, 2].imshow(show(recon[i]), cmap="gray")
        for ax, title in ((axes[i, 0], "input"), (axes[i, 2], "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
