"""Download a dataset once (needs network): python -m harness.fetch cifar10 --root data"""
from __future__ import annotations

import argparse
import sys

from harness.core.catalog import DATASETS
from harness.stages.data import fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--root", required=True, help="data root, e.g. ~/data")
    args = parser.parse_args(argv)
    try:
        fetch(args.name, args.root)
    except Exception as e:  # CLI boundary: one clear line instead of a traceback
        from harness.stages.folders import CIFAR_LOADERS

        cls = CIFAR_LOADERS.get(args.name)
        url = f" from {cls.url}" if cls is not None else ""
        print(f"error: fetching {args.name} into {args.root}{url} failed ({type(e).__name__}: {e}). "
              f"This needs network access; alternatively download the archive by hand and extract it "
              f"under {args.root}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
