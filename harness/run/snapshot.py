"""The code a job runs: a content-addressed snapshot of the `harness` package.

At submission the launcher copies the package it imported (its .py files and package data;
not __pycache__, compiled or hidden files) to `results/code/<hash>/harness/`, `<hash>` over the
files' relative paths and bytes (compiled there once), and starts the job's Python with
`results/code/<hash>` first on its import path. So an edit to the source after submission
reaches only jobs submitted after it: a job waiting in the queue, one Slurm requeues (same
sbatch script, same command) and one asked again to resume its checkpoint all import the code
they were submitted with. Every run submitted with the same code shares one snapshot; an
existing snapshot is reused, never rewritten (its files are read-only).

The run folder's `code.json` names the snapshot its checkpoint is written by: the launcher
writes it when it submits a run that has no checkpoint, and a run with a checkpoint is
submitted again with the snapshot named there, never with today's code.

    python -m harness.run.snapshot results            # each snapshot and the runs that name it
    python -m harness.run.snapshot results --prune    # remove those no run folder names (unused for a day)
"""
from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import harness
from harness.core.files import write_json_atomic
from harness.core.fingerprint import git_state
from harness.core.layout import Results, RunFolder

HASH_CHARS = 16  # 64 bits: no two code versions of one results folder collide


class CodeMismatch(RuntimeError):
    """A run's checkpoint cannot be resumed with the code that wrote it: one line saying why
    and what to do."""


def source_package() -> Path:
    """The package this process imported: what a job submitted from here runs."""
    return Path(harness.__file__).resolve().parent


def package_files(package: Path) -> dict[str, bytes]:
    """The package's files by their path below its parent (`harness/core/config.py`, ...), read
    once: the hash and the copy are of the same bytes even while an editor saves a file."""
    files = {}
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package.parent)
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue  # byte code and editors' swap files: not the code
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            files[rel.as_posix()] = path.read_bytes()
    return files


def code_hash(files: dict[str, bytes]) -> str:
    """The snapshot's name: a hash over every file's relative path and bytes (lengths framed, so
    that no two file sets hash alike by moving bytes across a boundary)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel]
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class Snapshot:
    """One snapshot, `results/code/<hash>/`: its `harness/` is what the job imports."""

    root: Path

    @property
    def hash(self) -> str:
        return self.root.name

    @property
    def package(self) -> Path:
        return self.root / "harness"

    def exists(self) -> bool:
        return (self.package / "__init__.py").is_file()

    def python(self, executable: str = sys.executable) -> str:
        """The command submitit starts the job's Python with. PYTHONPATH puts the snapshot before
        site-packages, where the editable install (`pip install -e .`) would resolve `harness` to
        the source tree; `-P` keeps the job's working directory (for a workflow started in the
        repository root: the source tree's own `harness/`) off the path. The submitting
        environment's PYTHONPATH follows, for whatever else it provides."""
        path = os.pathsep.join([str(self.root), *filter(None, [os.environ.get("PYTHONPATH")])])
        return shlex.join(["env", f"PYTHONPATH={path}", executable, "-P"])


def take(code_root: Path, package: Path | None = None) -> Snapshot:
    """The snapshot of `package` (default: the one imported here) under `code_root`
    (results/code), written if it is not there yet: built in a temporary folder beside it and
    renamed into place, so that a snapshot that exists is whole. Two launchers taking the same
    code at once: one rename wins, the other's copy is dropped."""
    files = package_files(package or source_package())
    snap = Snapshot(Path(code_root) / code_hash(files))
    if snap.root.exists():
        os.utime(snap.root)  # its last use: `prune` leaves a snapshot just taken or reused alone
        return snap
    tmp = Path(code_root) / f".tmp-{snap.hash}-{uuid.uuid4().hex[:8]}"
    try:
        for rel, data in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.chmod(0o444)  # never rewritten: jobs of other runs may be reading it
        # its byte code, once: a job does not write it (PYTHONDONTWRITEBYTECODE, or the jobs of a
        # read-only snapshot), and compiling the harness's modules cost every job its share
        compileall.compile_dir(tmp, ddir=str(snap.root), quiet=2, workers=1)
        for pyc in tmp.rglob("*.pyc"):
            pyc.chmod(0o444)
        os.rename(tmp, snap.root)
    except OSError:
        if not snap.exists():  # not the lost race: a real failure (disk full, permissions)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return snap


def recorded(run: RunFolder) -> dict | None:
    """What the run folder's code.json says (snapshot, stage, source, git state, submitted), if anything."""
    return json.loads(run.code.read_text()) if run.code.exists() else None


def for_run(run: RunFolder, stage: str, results: Results, package: Path | None = None) -> tuple[Snapshot, str]:
    """The snapshot a job of `run` must run, and the hash of today's code.

    No checkpoint: today's code, snapshotted and recorded in code.json. A checkpoint: the
    snapshot code.json names, whatever today's code is, so the run never mixes two versions.
    When that snapshot is gone, or the checkpoint predates snapshots, this raises CodeMismatch
    rather than restarting: a checkpoint may hold days of training, and only the user knows
    whether the edit since matters (resume it with its code restored, or start it over)."""
    package = package or source_package()
    today = code_hash(package_files(package))
    if run.checkpoint.exists():
        rec = recorded(run)
        # not `rerun=stale`: that redoes finished runs, and this one has no result yet
        over = f"to start it over with today's code (snapshot {today}), delete (or move aside) {run.checkpoint}"
        if rec is None:
            raise CodeMismatch(f"its checkpoint was written by code that kept no snapshot (before jobs ran "
                               f"snapshots); resuming it with today's code could mix two versions; {over}")
        snap = Snapshot(results.code / rec["snapshot"])
        if not snap.exists():
            raise CodeMismatch(f"its checkpoint was written by code snapshot {rec['snapshot']}, which is gone from "
                               f"{results.code}; resuming it with today's code could mix two versions; {over}")
        return snap, today
    snap = take(results.code, package)
    # the git state now: by the time the job runs, the tree may have moved on (the runner records this)
    write_json_atomic(run.code, {"snapshot": snap.hash, "stage": stage, "source": str(package),
                                 "git": git_state(package), "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return snap, today


def check_job(snapshot: str, run: RunFolder, results: Results) -> Snapshot:
    """In the job, before it trains: it imports `harness` from its snapshot, and the run's
    checkpoint (if any) was written by that snapshot. Either failing is one line, not a run
    that mixes two versions."""
    snap = Snapshot(results.code / snapshot)
    here = source_package()
    if here != snap.package.resolve():
        raise CodeMismatch(f"this job imports harness from {here}, not from its snapshot {snap.package}")
    rec = recorded(run)
    if run.checkpoint.exists() and (rec is None or rec["snapshot"] != snapshot):
        wrote = f"snapshot {rec['snapshot']}" if rec else "code that kept no snapshot"
        raise CodeMismatch(f"its checkpoint was written by {wrote}, this job runs snapshot {snapshot}: not resumed; "
                           f"ask for the run again (it resumes with the code that wrote the checkpoint)")
    return snap


def referrers(results: Results) -> dict[str, list[RunFolder]]:
    """Each snapshot under results/code and the run folders whose code.json names it."""
    out: dict[str, list[RunFolder]] = {p.name: [] for p in sorted(results.code.glob("[!.]*")) if p.is_dir()}
    for code in sorted((results.root / "runs").glob("*/code.json")):
        out.setdefault(json.loads(code.read_text())["snapshot"], []).append(RunFolder(code.parent))
    return out


def prune(results: Results, min_age_s: float = 86400) -> list[Path]:
    """Remove the snapshots no run folder names (their runs were deleted, or started over with
    newer code), and leftovers of an interrupted snapshot (`.tmp-*`); returns what was removed.
    Only those unused for `min_age_s`: a launcher takes (or reuses) a snapshot a moment before
    its run folder names it."""
    old = [p for p in results.code.glob("*") if p.is_dir() and time.time() - p.stat().st_mtime > min_age_s]
    named = {h for h, runs in referrers(results).items() if runs}
    removed = [p for p in old if p.name not in named]
    for path in removed:
        shutil.rmtree(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The code snapshots under <results>/code and the runs naming them.")
    ap.add_argument("results", type=Path, help="the results folder")
    ap.add_argument("--prune", action="store_true", help="remove the snapshots no run folder names")
    ap.add_argument("--min-age-h", type=float, default=24, help="with --prune: only those unused this long")
    args = ap.parse_args(argv)
    results = Results(args.results)
    if args.prune:
        for path in prune(results, args.min_age_h * 3600):
            print(f"removed {path}")
        return 0
    found = referrers(results)
    if not found:
        print(f"no code snapshots under {results.code}")
    for h, runs in found.items():
        present = "" if Snapshot(results.code / h).exists() else " (gone)"
        print(f"{h}{present}: {len(runs)} run(s) {' '.join(r.signature for r in runs)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
