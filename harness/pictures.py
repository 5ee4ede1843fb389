"""Pictures like the paper's Figures 2 and 3, and the reconstructions of a pre-trained run.

    python -m harness.pictures serializations --out results/pictures/serializations.png
    python -m harness.pictures reconstruction results/runs/<pretrain signature>

Every RandSAC pre-training run draws its reconstructions itself (and logs them to MLflow);
this command draws them again from a run folder, or the serializations of every segment type.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from harness.core.layout import RunFolder
from harness.science import methods
from harness.science.drawing import serializations
from harness.stages.data import sample_images


def reconstruction(run: RunFolder, out: Path | None = None, n: int = 4) -> Path | None:
    """Input | serialization | prediction for n test images, from a pre-training run's checkpoint."""
    cfg = methods.validate(yaml.safe_load(run.config.read_text())["config"])
    method = methods.method(cfg.method)(cfg)
    model = method.build()
    model.load_state_dict(torch.load(run.checkpoint, map_location="cpu", weights_only=False)["state"]["model"])
    return method.reconstruction(sample_images(cfg, n), out or run.reconstruction)


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
        return 0
    out = reconstruction(RunFolder(args.run_dir), args.out)
    if out is None:
        print("this run's method predicts no pixels: nothing to draw", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
