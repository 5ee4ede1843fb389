"""Pictures like the paper's Figures 2 and 3, and reconstructions of a pre-trained run.

    python -m harness.pictures serializations --out results/pictures/serializations.png
    python -m harness.pictures reconstruction results/runs/<pretrain signature>

A serialization panel shows the image's token grid: each segment a colour, its place in the
order as a number (and as shade: earlier is darker), partitions outlined. A reconstruction
panel shows input, serialization and the prediction de-normalized with each target patch's own
mean and variance (the first segment, never predicted, shows its input).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness.config import RunConfig, SegmentConfig  # noqa: E402
from harness.segments import Serializer, serialize  # noqa: E402

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


@torch.no_grad()
def reconstruction(cfg: RunConfig, run_dir: Path, out: Path | None = None, n: int = 4) -> Path:
    """Input | serialization | prediction for n test images of a pre-trained RandSAC run."""
    from harness.data import build_dataset, dataset_info, eval_transform
    from harness.model import patchify, unpatchify
    from harness.pretrain import build

    info = dataset_info(cfg.data.name)
    model = build(cfg)
    state = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)["state"]["model"]
    model.load_state_dict(state)
    model.eval()
    test = build_dataset(cfg.data.name, cfg.data.root, train=False, transform=eval_transform(info, cfg.data.image_size))
    imgs = torch.stack([test[i][0] for i in range(n)])
    serializer = Serializer(cfg.segments, cfg.grid_size)
    g = torch.Generator().manual_seed(0)
    seg = serializer.segmentation(n, g)
    ranks = serialize(seg, cfg.segments.order, g)
    pred = model(imgs, ranks)
    p = cfg.model.patch_size
    target = patchify(imgs, p)
    if cfg.pretrain.norm_pix_loss:  # back to pixels with each target patch's own statistics
        pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
    pred = torch.where((ranks == 0)[..., None], target, pred)
    recon = unpatchify(pred, p, info.channels)
    mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]

    def show(x):
        x = (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        return x[..., 0] if x.shape[-1] == 1 else x

    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    grid = cfg.grid_size
    for i in range(n):
        axes[i, 0].imshow(show(imgs[i]), cmap="gray")
        draw_serialization(axes[i, 1], seg.segments[i].reshape(grid, grid).numpy(),
                           ranks[i].reshape(grid, grid).numpy(), None, None, "serialization" if i == 0 else "")
        axes[i, 2].imshow(show(recon[i]), cmap="gray")
        for ax, title in ((axes[i, 0], "input"), (axes[i, 2], "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = out or Path(run_dir) / "reconstruction.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.pictures", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serializations", help="every segment type and hierarchy on one token grid")
    s.add_argument("--out", type=Path, default=Path("results/pictures/serializations.png"))
    s.add_argument("--grid", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("reconstruction", help="input / serialization / prediction of a pre-trained run")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.command == "serializations":
        print(serializations(args.out, args.grid, args.seed))
    else:
        import yaml

        cfg = RunConfig.model_validate(yaml.safe_load((args.run_dir / "config.yaml").read_text())["config"])
        print(reconstruction(cfg, args.run_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
