"""How a preflight runs a stage: from step 0, keeping no checkpoint, and an evaluation without
its pre-training (imported by the preflight job only: it imports the stages)."""
from __future__ import annotations

from harness.science import methods
from harness.stages.checkpoint import Checkpoint
from harness.stages.context import StageContext


class NoCheckpoint(Checkpoint):
    """A preflight starts from step 0 and keeps nothing."""

    def save(self, *args, **kwargs) -> None:
        pass

    def resume(self, *args, **kwargs):
        return 0, [], None


class PreflightContext(StageContext):
    """An evaluation stage without its pre-training: it starts from the encoder as initialised
    (MAE's initialisation, as the supervised baseline's)."""

    _as_initialised = False

    def initial_encoder(self, drop_path: float = 0.0):
        if self.parent is not None:
            return super().initial_encoder(drop_path)
        self._as_initialised = True
        try:
            return super().initial_encoder(drop_path)
        finally:
            self._as_initialised = False

    def method(self):
        return methods.method("supervised")(self.cfg) if self._as_initialised else super().method()
