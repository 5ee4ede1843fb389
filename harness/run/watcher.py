"""One watcher per workflow: the state of every Slurm job of the user from one `squeue` call per
interval, shared by all the launchers waiting on a results folder.

Each waiting launcher used to ask `squeue -j` for its own job every 2 s (and submitit's own
watcher added `sacct`): 1.5 RPCs per second per waiting run, linear in the number of runs, where
Slurm sites rate-limit RPCs per user. Here the queue's state lives in a small file,
`<results>/.slurm/queue-<user>.json`. A launcher that finds it older than the interval takes a
lock (flock) and refreshes it with one `squeue` for all of the user's jobs; the others, finding
the lock held or the file fresh, read it. A crashed refresher releases its lock with its
process, so there is no watcher process to keep alive.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.files import write_text_atomic
from harness.run import slurm

UNLISTED = ("UNLISTED", "")  # squeue no longer lists the job: it ended over MinJobAge (300 s) ago


@dataclass(frozen=True)
class QueueSnapshot:
    """The user's jobs as one squeue call saw them: job id -> (state, reason)."""

    taken: float  # when the squeue call started (epoch seconds); 0: never asked
    jobs: dict[str, tuple[str, str]] = field(default_factory=dict)
    error: str | None = None  # why squeue could not answer; the jobs are then unknown

    def state(self, job_id: str, since: float) -> tuple[str, str] | None:
        """The job's (state, reason); UNLISTED when squeue, asked after `since` (the job's
        submission), no longer lists it; None when this snapshot cannot tell."""
        if self.error is not None or self.taken <= since:  # asked before the job existed
            return None
        return self.jobs.get(str(job_id), UNLISTED)


class Watcher:
    def __init__(self, folder: Path, interval_s: float = 30.0, user: str | None = None):
        self.user = user or getpass.getuser()
        self.folder, self.interval_s = Path(folder), interval_s
        self.path = self.folder / f"queue-{self.user}.json"  # per user: squeue -u lists only theirs
        self.lock = self.folder / f"queue-{self.user}.lock"

    def snapshot(self, fresh_after: float | None = None) -> QueueSnapshot:
        """The latest snapshot, refreshed first when older than the interval and no other
        launcher is refreshing it. `fresh_after`: wait for one taken after that time (a job
        submitted a moment ago by a launcher that died, which an older snapshot cannot show)."""
        snap = self.read()
        if fresh_after is not None and snap.taken <= fresh_after:
            return self.refresh(wait=True)
        if time.time() - snap.taken >= self.interval_s:
            return self.refresh(wait=False) or snap
        return snap

    def state(self, job_id: str, since: float) -> tuple[str, str] | None:
        return self.snapshot().state(job_id, since)

    def read(self) -> QueueSnapshot:
        try:
            data = json.loads(self.path.read_text())
            return QueueSnapshot(data["taken"], {k: tuple(v) for k, v in data["jobs"].items()}, data.get("error"))
        except (OSError, ValueError, KeyError, TypeError):  # none yet (or a foreign file): ask
            return QueueSnapshot(0.0)

    def refresh(self, wait: bool) -> QueueSnapshot | None:
        """Ask squeue under the lock and write the snapshot; None when another launcher holds the
        lock (and `wait` is false). A snapshot another launcher wrote while this one waited for
        the lock is used as it is."""
        self.folder.mkdir(parents=True, exist_ok=True)
        asked = time.time()
        with open(self.lock, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return None
            snap = self.read()
            fresh = snap.taken > asked if wait else time.time() - snap.taken < self.interval_s
            if not fresh:
                snap = self.ask()
                self.write(snap)
            return snap  # the lock goes with the file's closing

    def ask(self) -> QueueSnapshot:
        """One squeue call for every job of the user, those that ended in the last MinJobAge
        too (`-t all`: their final state, without asking accounting)."""
        taken = time.time()
        try:
            out = slurm.run("squeue", "-h", "-t", "all", "-u", self.user, "-o", "%i|%T|%r", timeout=60)
        except slurm.SlurmError as err:
            return QueueSnapshot(taken, error=str(err))
        jobs = {}
        for line in out.splitlines():
            job_id, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            if job_id and state:
                jobs[job_id] = (state, reason)
        return QueueSnapshot(taken, jobs)

    def write(self, snap: QueueSnapshot) -> None:
        """Atomically: a reader sees the old snapshot or the new one, never half of one."""
        write_text_atomic(self.path, json.dumps({"taken": snap.taken, "error": snap.error, "jobs": snap.jobs}))
