"""Two torch jobs on one CPU: each one's speed beside the other, against its own speed alone, in one run.

    python benchmarks/sharing.py [--seconds 8] [--repeats 5] [--batch 16] [--envs default GOMP_SPINCOUNT=1000]
                                 [--quanta 0.2 1]

Every job is the `smoke` pre-training step (Table 3's M=2 cell at scale smoke: forward, backward,
AdamW on a batch already in memory). For each OpenMP setting, four job processes start and stay:
A and B with `--threads` torch threads (every core by default), C and D with one thread each.
Each waits for the parent's word, computes steps for `--seconds`, reports its images per
second, and waits again. A round is these phases:
  - `1 job, T threads`: A alone, then B alone (what a table run alone gets);
  - `2 jobs, T threads each`: A and B at once, side by side (a user's tests beside a training
    table, two pytest workers, a Slurm node that packs two jobs);
  - `2 jobs, 1 thread each`: C and D at once (the local executor's `jobs: 2`);
  - `1 job, T threads, turns`: A alone, then B alone, each step in a turn of the CPU (what the
    harness's stage jobs do, harness.stages.turns: a job holds its cores for 1 s of steps at a
    time, then queues behind any other);
  - `2 jobs, T threads, turns`: A and B at once, each step in a turn.
With `--quanta`, the two phases in turns run once per turn length (`q=` in their names).
Because A and B are the same processes alone and together, each one's share is its speed beside
the other over its own speed alone: no difference between two processes counts as a loss or a
gain of sharing. What is left is this VM's speed, which moves by up to a third between two 8-s
phases of one process (docs/findings.md): every round runs the phases of every setting, each
round from another phase; a job's share is taken within each round (its rate in the phase over
its rate alone in the same round) and printed as the median over rounds with its quartiles, so
many short rounds (`--seconds 6 --repeats 28`) pair each phase with an alone phase seconds away.
OpenMP's wait policy (`OMP_WAIT_POLICY`) says what a thread does at a barrier: `active` spins,
`passive` sleeps; GNU OpenMP's `GOMP_SPINCOUNT` says how long it spins before it sleeps (default
300,000 spins). Both must be set before the OpenMP runtime starts, so each setting has its own
four processes; `default` sets neither; all of them are started (one after the other) before the
first round. It also times a turn taken and given back with nobody else
waiting (what a job alone pays). Prints medians over rounds; no threshold is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.stages import turns as cpu_turns  # standard library only: the parent stays light


def job(batch: int, threads: int) -> None:
    """A job process: warm up, then for each line `SECONDS TURNS QUANTUM` on stdin, compute steps
    for SECONDS, one at least (each in a turn of the CPU if TURNS is 1, as a stage's are, turns of
    QUANTUM seconds of steps) and print its images per second as JSON; end at end of input."""
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from throughput import Bench

    from harness.plan import studies

    torch.set_num_threads(threads)
    cfg = next(c.config for c in studies.expand(studies.load_study("table3"), "smoke", controls=False)
               if c.config.segments.size == 2)
    step = Bench(cfg, torch.device("cpu"), batch).synthetic()
    for _ in range(3):
        step()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        seconds, turns, quantum = float(line.split()[0]), line.split()[1] == "1", float(line.split()[2])
        cpu = cpu_turns.for_cpu(turns)
        if turns:
            cpu.quantum_s = quantum
        start, steps = time.perf_counter(), 0
        # at least one step: in turns a job may wait out the whole window for its partner's turn
        for _ in cpu.each(iter(lambda: steps == 0 or time.perf_counter() - start < seconds, False), threads):
            step()
            steps += 1
        print(json.dumps({"rate": batch * steps / (time.perf_counter() - start)}), flush=True)


class Job:
    """A job process of `threads` threads with `setting` ("default" or NAME=VALUE) in its
    environment, ready to be told to compute."""

    def __init__(self, threads: int, setting: str, batch: int):
        env = {k: v for k, v in os.environ.items() if k not in OPENMP}
        if setting != "default":
            name, _, value = setting.partition("=")
            env[name] = value
        self.proc = subprocess.Popen([sys.executable, __file__, "--job", "--batch", str(batch), "--threads", str(threads)],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # its imports and warm-up run before any other job's

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a job failed (exit {self.proc.wait()})")
        return json.loads(line)

    def start(self, seconds: float, turns: bool, quantum: float) -> None:
        self.proc.stdin.write(f"{seconds} {int(turns)} {quantum}\n")
        self.proc.stdin.flush()

    def rate(self) -> float:
        return self._read()["rate"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


OPENMP = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def run_together(jobs: list[Job], seconds: float, turns: bool, quantum: float) -> list[float]:
    """Start the jobs' timed steps at once (each was waiting on its input); their images per second."""
    for j in jobs:
        j.start(seconds, turns, quantum)
    return [j.rate() for j in jobs]


def uncontended_turn_us(repeats: int = 2000) -> float:
    """Microseconds to take a turn of every core and give it back, with nobody else waiting."""
    with tempfile.TemporaryDirectory() as folder:
        turns = cpu_turns.CpuTurns(Path(folder), os.cpu_count() or 1)
        start = time.perf_counter()
        for _ in range(repeats):
            with turns.turn(os.cpu_count() or 1):
                pass
        return (time.perf_counter() - start) / repeats * 1e6


def measure(args: argparse.Namespace, t: int) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(setting, phase): {job: its rates, one a round}}. The phases of every setting run in
    every round, so that the settings see the same drifts of this VM's speed."""
    phases, jobs = [], []
    for setting in args.envs:
        a, b, c, d = (Job(threads, setting, args.batch) for threads in (t, t, 1, 1))
        jobs += [a, b, c, d]
        names = {a: "A", b: "B", c: "C", d: "D"}
        quanta = [(q, f", q={q:g}" if len(args.quanta) > 1 else "") for q in args.quanta]
        phases += [(setting, name, groups, turns, q, names) for name, groups, turns, q in [
            (f"1 job, {t} threads", [[a], [b]], False, 0), (f"2 jobs, {t} threads each", [[a, b]], False, 0),
            ("2 jobs, 1 thread each", [[c, d]], False, 0),
            *[(f"1 job, {t} threads, turns{qn}", [[a], [b]], True, q) for q, qn in quanta],
            *[(f"2 jobs, {t} threads, turns{qn}", [[a, b]], True, q) for q, qn in quanta]]]
    rates: dict[tuple[str, str], dict[str, list[float]]] = {(setting, name): {} for setting, name, *_ in phases}
    try:
        for round_ in range(args.repeats):
            k = round_ * len(phases) // args.repeats  # each round starts at another phase
            for setting, name, groups, turns, quantum, names in phases[k:] + phases[:k]:
                for group in groups:
                    for j, rate in zip(group, run_together(group, args.seconds, turns, quantum)):
                        rates[(setting, name)].setdefault(names[j], []).append(rate)
    finally:
        for j in jobs:
            j.close()
    return rates


def share(rates: list[float], alone: list[float]) -> str:
    """A job's rate in a phase over its own rate alone, round by round: `47%` for one round,
    `47% [44-51]` (the median and quartiles over rounds) for more."""
    ratios = [r / a for r, a in zip(rates, alone)]
    if len(ratios) < 4:
        return f"{statistics.median(ratios):.0%}"
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.0%} [{q1 * 100:.0f}-{q3 * 100:.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time of each phase")
    ap.add_argument("--batch", type=int, default=16, help="the smoke recipe's pre-training batch")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of jobs A and B")
    ap.add_argument("--repeats", type=int, default=5,
                    help="rounds over every phase of every setting, each from another phase")
    ap.add_argument("--envs", nargs="+", default=["default", "GOMP_SPINCOUNT=1000"],
                    help="OpenMP settings to compare: default, or NAME=VALUE")
    ap.add_argument("--quanta", nargs="+", type=float, default=[cpu_turns.CpuTurns.quantum_s],
                    help="turn lengths (seconds of steps a turn) to compare, each in every round")
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        job(args.batch, args.threads)
        return
    t = args.threads
    print(f"# smoke pre-training step (batch {args.batch}), {os.cpu_count()} cores, fp32; {args.seconds:g} s a phase; "
          f"{args.repeats} round(s), medians over rounds")
    print("# 'of alone': the median rate of a job of the phase over the median of A and B alone (no turns);\n"
          "# 'each of its own alone': A's and B's rate in the phase over its own rate alone in the same round,\n"
          "#   the median over rounds [quartiles]")
    print(f"{'setting':<22} {'case':<34} {'img/s per job':>14} {'range':>10} {'of alone':>9} "
          f"{'each of its own alone':>34} {'of default alone':>17}")
    rates = measure(args, t)
    reference = None
    for setting in args.envs:
        alone = rates[(setting, f"1 job, {t} threads")]
        pooled_alone = statistics.median([r for v in alone.values() for r in v])
        reference = pooled_alone if setting == "default" else reference
        for (setting_, name), by_job in rates.items():
            if setting_ != setting:
                continue
            values = [r for v in by_job.values() for r in v]
            median = statistics.median(values)
            own = "" if by_job is alone else " / ".join(
                f"{j} {share(v, alone[j])}" for j, v in by_job.items() if j in alone)
            of_default = f"{median / reference:.0%}" if reference else ""
            print(f"{setting:<22} {name:<34} {median:14.1f} {f'{min(values):.0f}-{max(values):.0f}':>10} "
                  f"{median / pooled_alone:9.0%} {own:>34} {of_default:>17}", flush=True)
    print(f"a turn of every core taken and given back, nobody waiting: {uncontended_turn_us():.1f} us "
          f"(a job takes one every {cpu_turns.CpuTurns.quantum_s:g} s of steps)")


if __name__ == "__main__":
    main()
