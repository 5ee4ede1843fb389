"""End-of-epoch checkpoints: written atomically, resumed exactly.

A checkpoint holds the stage's modules, optimizer and schedule, the metric history, the epoch,
and the random state of every rank, so a resumed run continues exactly where an uninterrupted
one would be (the data order of epoch e is a function of (seed, e) alone).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core.files import write_atomic
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


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically: a kill or a full disk mid-write (DiskFull) leaves
    the previous file intact."""
    write_atomic(path, lambda f: torch.save(obj, f))


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
