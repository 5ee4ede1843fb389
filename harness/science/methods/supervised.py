"""Table 7's supervised baseline: the fine-tuning recipe from a randomly initialised encoder."""
from __future__ import annotations

from harness.core.layout import RunFolder
from harness.science.methods.base import Method as Base
from harness.science.model import Encoder, init_weights


class Method(Base):
    """No pre-training: evaluation starts from MAE's initialisation of the encoder."""

    def initial_encoder(self, encoder: Encoder, parent: RunFolder | None) -> Encoder:
        init_weights(encoder)
        return encoder
