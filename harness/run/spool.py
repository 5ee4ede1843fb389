"""A stage's tracking spool: what it logs, appended to its run folder, and how much of that the
tracking store holds.

    runs/<signature>/tracking/<stage>.jsonl   one event a line, in the order the stage logged them
    runs/<signature>/tracking/<stage>.sent    how many of those lines the store holds
    runs/<signature>/tracking/<stage>.lock    held by whichever process carries them to the store
    runs/<signature>/tracking/<stage>.state   whether that process finds the store

The stage writes events and never waits for the store (harness.run.tracking.StageTracker); a
forwarder carries them (harness.run.forwarder). An event is delivered, then counted in `.sent`:
a forwarder that dies in between delivers it again, and the store keeps one copy (MLflow's
SQL store skips a metric equal in key, step, timestamp and value to one it holds; tags and
params are set to what they are). So a replay is idempotent: no step twice, none lost.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.core.files import write_text_atomic
from harness.core.layout import RunFolder


@dataclass(frozen=True)
class Spool:
    run: RunFolder
    stage: str

    @property
    def events(self) -> Path:
        return self.run.tracking / f"{self.stage}.jsonl"

    @property
    def sent_file(self) -> Path:
        return self.run.tracking / f"{self.stage}.sent"

    @property
    def lock_file(self) -> Path:
        return self.run.tracking / f"{self.stage}.lock"

    @property
    def state_file(self) -> Path:
        """Whether the forwarder finds the store: {"down_since": <time> or null}."""
        return self.run.tracking / f"{self.stage}.state"

    def append(self, kind: str, **fields: Any) -> None:
        """One event, written whole: a reader never sees half of it as an event."""
        self.run.tracking.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": kind, **fields}, separators=(",", ":"), default=str) + "\n"
        with open(self.events, "a") as f:
            f.write(line)

    def read(self, start: int = 0) -> list[dict[str, Any]]:
        """The complete events from line `start` on (a last line still being written is left)."""
        if not self.events.exists():
            return []
        with open(self.events) as f:
            lines = f.read().split("\n")
        return [json.loads(line) for line in lines[start:-1]]  # the text after the last newline is incomplete

    def sent(self) -> int:
        try:
            return int(self.sent_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def mark_sent(self, count: int) -> None:
        write_text_atomic(self.sent_file, f"{count}\n")

    def waiting(self) -> int:
        """How many events the store does not hold yet."""
        return len(self.read(self.sent()))

    @contextmanager
    def lock(self, wait: bool = True) -> Iterator[bool]:
        """Hold the spool's lock (one carrier at a time); without `wait`, yields False when
        another process holds it."""
        self.run.tracking.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for every file
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def spools(results_runs: Path) -> list[Spool]:
    """Every stage spool under results/runs/ (superseded ones are not the run's)."""
    out = []
    for events in sorted(results_runs.glob("*/tracking/*.jsonl")):
        out.append(Spool(RunFolder(events.parent.parent), events.stem))
    return out
