"""Stale runs: finished runs made by other code than today's, shown, and redone only when asked.

A finished run is **stale** when the code fingerprint its result file recorded
(harness.core.fingerprint, written by harness.run.runner) differs from today's fingerprint of
its stage and method, computed from the package this process imported (the working tree), or,
for an evaluation, when the pre-training run it reads is stale. A result that recorded no code
(written before runs recorded it) is not stale: its code is unknown ("code not recorded").

Nothing reruns by itself: a stale run stays done, `harness.status` says `stale` and names the
modules that changed, and the tables mark its cells. `--config rerun=stale` redoes the stale
runs of the target: each one's `superseded` param (the Snakefile's stage rules) grows by one, so
Snakemake plans it (a dry run lists exactly those); before any job starts (Snakemake's onstart,
never in a dry run), `start_over` moves its results, checkpoint, encoder and MLflow run id into
`superseded-<when it finished>/` in its run folder and tags its MLflow run `superseded`, and the
job starts it over with today's code, as a new MLflow run.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.fingerprint import Fingerprint, package_root, recorded
from harness.core.layout import Results, RunFolder
from harness.plan.studies import StageRun
from harness.science import methods


@dataclass(frozen=True)
class CodeState:
    """What a finished run's code is, compared with today's."""

    recorded: bool  # its result recorded its code
    changed: tuple[str, ...] = ()  # the modules of its own code that changed since
    parent: str | None = None  # the stale pre-training run it reads (an evaluation)
    parent_changed: tuple[str, ...] = ()  # the modules that changed in that run's code

    @property
    def stale(self) -> bool:
        return bool(self.changed) or self.parent is not None

    @property
    def modules(self) -> list[str]:
        """Every module whose change makes it stale (its own, its pre-training run's)."""
        return sorted(set(self.changed) | set(self.parent_changed))

    def describe(self) -> str:
        """One phrase for status lines and MLflow tags."""
        if not self.recorded:
            return "code not recorded"
        parts = [f"code changed since: {', '.join(self.changed)}"] if self.changed else []
        if self.parent:
            parts.append(f"its pre-training run {self.parent} is stale ({', '.join(self.parent_changed)})")
        return "; ".join(parts)


class Staleness:
    """The code state of every planned run that has a result, against the package at `root`
    (default: the one imported here), each computed once."""

    def __init__(self, runs: dict[str, StageRun], results: Results, root: Path | None = None):
        self.runs, self.results = runs, results
        self.root = Path(root or package_root())
        self._today: dict[tuple[str, str], Fingerprint] = {}
        self._states: dict[str, CodeState | None] = {}

    def today(self, method: str, stage: str) -> Fingerprint:
        """Today's fingerprint of a `stage` run of `method`."""
        key = (method, stage)
        if key not in self._today:
            self._today[key] = methods.code_fingerprint(method, stage, self.root)
        return self._today[key]

    def state(self, sig: str) -> CodeState | None:
        """The code state of planned run `sig`; None while it has no result."""
        if sig not in self._states:
            self._states[sig] = self._state(sig)
        return self._states[sig]

    def _state(self, sig: str) -> CodeState | None:
        run = self.runs[sig]
        path = self.results.run(sig).result(run.stage)
        if not path.exists():
            return None
        code = recorded(json.loads(path.read_text()))
        if code is None:
            return CodeState(recorded=False)
        changed = tuple(code.changed(self.today(run.config.method, run.stage)))
        parent = self.state(run.parent) if run.parent and run.parent in self.runs else None
        if parent is not None and parent.stale:
            return CodeState(True, changed, run.parent, tuple(parent.modules))
        return CodeState(True, changed)

    def stale(self) -> list[str]:
        """The signatures of the stale runs, in plan order."""
        return [sig for sig in self.runs if (st := self.state(sig)) is not None and st.stale]


def start_over(run: RunFolder, stage: str, why: str, tag=None) -> Path:
    """Keep a stale run's results aside and leave its folder ready to start over: its result
    file, checkpoint, encoder, progress, reconstruction, config, code snapshot record, MLflow
    run id and tracking spool move into `superseded-<when its result was written>/` (nothing is deleted; the
    submitit logs stay where they are), and `tag(mlflow_run_id, why)` marks its MLflow run (the
    workflow passes the store's tagger). Returns the folder they went to."""
    result = run.result(stage)
    when = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.stat().st_mtime))
    dest = run.path / f"superseded-{when}"
    n = 1
    while dest.exists():  # two results in one second: never mix them
        n += 1
        dest = run.path / f"superseded-{when}-{n}"
    dest.mkdir()
    run_id = run.mlflow_run_id.read_text().strip() if run.mlflow_run_id.exists() else None
    kept = [result, run.checkpoint, run.encoder, run.progress, run.reconstruction, run.config, run.code,
            run.mlflow_run_id, run.tracking]
    for path in kept:
        if path.exists():
            shutil.move(str(path), dest / path.name)
    if run_id and tag is not None:
        tag(run_id, why)
    return dest
