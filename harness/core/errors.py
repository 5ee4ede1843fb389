"""Errors every layer names."""
from __future__ import annotations


class StageStopped(Exception):
    """A stage stopped on request (preemption, a time limit, a stopped workflow) after writing a
    checkpoint at the step it had reached: run again, it continues from that step."""
