"""Turns on a shared CPU: jobs on the same cores compute one after the other, each with all its threads.

Two torch jobs that each run as many OpenMP threads as there are cores crawl side by side: at
every barrier a thread waits for a sibling that the other job's threads have pushed off its
core (each keeps a small fraction of its speed alone, docs/findings.md). So the harness's CPU
jobs take turns instead: a job holds as many cores as it has threads while it computes batches
(each one's fetch, forward, backward and optimizer step; batches of an evaluation), `quantum_s`
of them at a time, then hands them on. Two 2-thread jobs on 2 cores alternate, each with all its
threads while it computes; two 1-thread jobs hold a core each and never wait; a job alone takes
its turns with nobody to wait for (microseconds a turn). The thread count, hence every number a
job computes, stays what it was.

The cores are lock files, one per core of the process's CPU set (`os.sched_getaffinity`), in a
folder per host, user and CPU set: jobs on other cores (Slurm's cgroups) never wait for each
other. A turn takes the gate, then its cores, then gives the gate back, so that a job that gives
its cores back and wants them again queues behind the job already waiting: turns alternate, no
job starves the other. The locks are flock(2): the kernel drops them with the process that held
them, however it ends. Only computation in turns is coordinated; a job's start-up, its logging
and its checkpoints run beside the other job's turn.
"""
from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

ENV = "HARNESS_CPU_TURNS"  # "0": this process computes without turns (executor.cpu_turns: false)
FOLDER_ENV = "HARNESS_CPU_TURNS_DIR"  # where the lock files live (default: a private folder in /dev/shm or /tmp)


def default_base() -> Path:
    """A private folder of this user's on a file system local to this host."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"randsac-cpu-turns-{os.getuid()}"


def cpu_ranges(cpus: Iterable[int]) -> str:
    """`0-3,8`: a CPU set as Linux writes it (cpuset(7))."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


class CpuTurns:
    """The turns of the jobs that share one CPU set: `turn(threads)` holds `threads` of its
    cores (all of them at most) while its block runs."""

    # seconds of batches a turn: a hand-over slows the first step of the job that takes the cores
    # (the leaving job's OpenMP thread spins on a while, the caches hold the other's data), so a
    # longer turn pays it less often, while a waiting job waits this long; 1 s kept a pair more
    # of its speed than 0.2 s, measured in the same rounds (docs/findings.md, "CPU turns")
    quantum_s = 1.0

    def __init__(self, folder: Path, cores: int):
        self.folder, self.cores = Path(folder), cores
        self._pid: int | None = None  # the process whose locks these are (a fork opens its own)
        self._gate = -1
        self._slots: list[int] = []
        self._held: list[int] = []

    @classmethod
    def here(cls, base: Path | str | None = None) -> "CpuTurns":
        """The turns of this process's CPU set on this host."""
        cpus = os.sched_getaffinity(0)
        base = Path(base or os.environ.get(FOLDER_ENV) or default_base())
        return cls(base / f"{socket.gethostname()}-cpus-{cpu_ranges(cpus)}", len(cpus))

    def _open(self) -> None:
        if self._pid == os.getpid():
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._gate = os.open(self.folder / "gate", flags, 0o600)
        self._slots = [os.open(self.folder / f"core{i}", flags, 0o600) for i in range(self.cores)]
        self._pid, self._held = os.getpid(), []

    def _take(self, threads: int) -> None:
        """Take `threads` of the cores (all of them at most), queued at the gate."""
        self._open()
        need = max(1, min(threads, self.cores))
        order = [(os.getpid() + i) % self.cores for i in range(self.cores)]  # 1-core jobs spread over the cores
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            for slot in order:
                if len(self._held) == need:
                    break
                try:
                    fcntl.flock(self._slots[slot], fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._held.append(slot)
                except BlockingIOError:
                    pass
            for slot in order:  # not enough free: wait for the others' cores, in order, holding the gate
                if len(self._held) == need:
                    break
                if slot not in self._held:
                    fcntl.flock(self._slots[slot], fcntl.LOCK_EX)
                    self._held.append(slot)
        except BaseException:
            self._give()
            raise
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def _give(self) -> None:
        for slot in self._held:
            fcntl.flock(self._slots[slot], fcntl.LOCK_UN)
        self._held = []

    @property
    def holding(self) -> int:
        """How many cores this process holds now."""
        return len(self._held) if self._pid == os.getpid() else 0

    @contextmanager
    def turn(self, threads: int) -> Iterator[None]:
        """Hold `threads` cores (at most all of them) while the block runs; inside a turn
        already held, just run it."""
        if self.holding:
            yield
            return
        self._take(threads)
        try:
            yield
        finally:
            self._give()

    def each(self, items: Iterable[T], threads: int) -> Iterator[T]:
        """`items`, each fetched and used (the loop's body) in a turn: the cores are given back
        after the item in which the turn reaches `quantum_s`, and when the loop ends or fails."""
        if self.holding:  # inside a turn already
            yield from items
            return
        it, since = iter(items), None
        try:
            while True:
                if since is None:
                    self._take(threads)
                    since = time.monotonic()
                try:
                    item = next(it)
                except StopIteration:
                    return
                yield item
                if time.monotonic() - since >= self.quantum_s:
                    self._give()
                    since = None
        finally:
            if since is not None:
                self._give()


class NoTurns:
    """A process that computes without turns (on a GPU, one of several ranks, or turned off)."""

    holding = 0

    @contextmanager
    def turn(self, threads: int) -> Iterator[None]:
        yield

    def each(self, items: Iterable[T], threads: int) -> Iterable[T]:
        return items


_here: CpuTurns | None = None


def for_cpu(enabled: bool = True) -> CpuTurns | NoTurns:
    """This process's turns for its CPU computation: one set of locks per process, unless
    `enabled` is false or the environment turns them off (HARNESS_CPU_TURNS=0)."""
    global _here
    if not enabled or os.environ.get(ENV, "1") == "0":
        return NoTurns()
    if _here is None:
        _here = CpuTurns.here()
    return _here
