"""Table 7's supervised baseline: the fine-tuning recipe from a randomly initialised encoder."""
from __future__ import annotations

from harness.science.methods.base import Method as Base


class Method(Base):
    """No pre-training: evaluation starts from MAE's initialisation of the encoder."""

    stages = ("finetune",)

    def initial_encoder(self, encoder, parent):
        from harness.science.encoder import init_weights

        init_weights(encoder)
        return encoder
