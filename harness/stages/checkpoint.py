"""End-of-epoch checkpoints: written atomically, resumed exactly.

A checkpoint holds the stage's modules, optimizer and schedule, the metric history, the epoch,
and the random state of every rank, so a resumed run continues exactly where an uninterrupted
one would be (the data order of epoch e is a function of (seed, e) alone).
"""
from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.stages.distributed import SINGLE, Dist


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class DiskFull(OSError):
    """No space left where a checkpoint (or an encoder) is written; the previous file is intact."""


def atomic_save(obj: Any, path: Path) -> None:
    """Write next to `path`, fsync, then rename: a kill or a full disk mid-write leaves the old
    file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
            kept = "the previous one is intact" if path.exists() else "there was none before"
            raise DiskFull(errno.ENOSPC, f"no space left on the device of {path}: the write stopped and {kept}; "
                                         f"free space there and ask again to resume") from None
        raise


class Checkpoint:
    """The end-of-epoch checkpoint of one stage: modules, optimizer, schedule, RNG, epoch."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, epoch: int, history: list[dict], dist: Dist = SINGLE, position: dict | None = None,
             **objects: Any) -> None:
        """Rank 0 writes; the RNG states of every rank go in (a collective call). `epoch`: epochs
        done; `position`: within the next one, the steps done and the sums of their metrics."""
        rngs = dist.gather(rng_state())
        positions = dist.gather(position) if position is not None else None  # each rank's own sums
        if dist.is_main:
            state = {name: obj.state_dict() for name, obj in objects.items()}
            atomic_save({"epoch": epoch, "position": positions, "history": history, "rng": rngs, "state": state},
                        self.path)
        dist.barrier()

    def resume(self, dist: Dist = SINGLE, **objects: Any) -> tuple[int, list[dict], dict | None]:
        """Load the last checkpoint into `objects`; returns (epochs done, metric history, the
        position inside the next epoch or None)."""
        if not self.path.exists():
            return 0, [], None
        ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
        for name, obj in objects.items():
            obj.load_state_dict(ckpt["state"][name])
        rngs, positions = ckpt["rng"], ckpt.get("position")
        set_rng_state(rngs[min(dist.rank, len(rngs) - 1)])
        return ckpt["epoch"], ckpt["history"], positions[min(dist.rank, len(positions) - 1)] if positions else None
