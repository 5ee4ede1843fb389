"""The random-init control of every table: a randomly initialised encoder of the cells'
architecture, evaluated with the table's recipes. Its fine-tuning run is Table 7's supervised
baseline wherever the recipe is the same (one signature)."""
from __future__ import annotations

from harness.core.stages import EVALUATIONS
from harness.science.methods.supervised import Method as Supervised


class Method(Supervised):
    stages = EVALUATIONS
