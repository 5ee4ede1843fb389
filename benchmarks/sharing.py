"""Two torch jobs on one CPU: each one's speed beside the other, against its speed alone, in one run.

    python benchmarks/sharing.py [--seconds 20] [--batch 16] [--envs default OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000]

Every job is the `smoke` pre-training step (Table 3's M=2 cell at scale smoke: forward, backward,
AdamW on a batch already in memory) run in its own process for a fixed time. For each OpenMP wait
setting of the OpenMP runtime's environment it measures, side by side in this one run:
  - one job alone with every core (what a table run alone gets);
  - two such jobs at once (a user's tests beside a training table, two pytest workers, a Slurm
    node that packs two jobs);
  - two jobs at once with one thread each (the local executor's `jobs: 2`);
  - one job alone, and two at once, with every core, each step in a turn of the CPU (what the
    harness's stage jobs do, harness.stages.turns: a job holds its cores for 0.2 s of steps at a
    time, then queues behind the other).
It also times a turn taken and given back with nobody else waiting (what a job alone pays).
OpenMP's wait policy (`OMP_WAIT_POLICY`) says what a thread does at a barrier: `active` spins,
`passive` sleeps; GNU OpenMP's `GOMP_SPINCOUNT` says how long it spins before it sleeps
(default 300,000 spins). Both must be set before the OpenMP runtime starts, so every job is a
fresh process with the setting in its environment; `default` sets neither. Prints images per
second of each job and its share of the speed alone (without turns) of that setting and of
`default`. No threshold is asserted.
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


def job(seconds: float, batch: int, threads: int, turns: bool, start_line: Path, jobs: int) -> None:
    """One training job: print its images per second over `seconds` after a warm-up, as JSON;
    with `turns`, each step in a turn of the CPU (harness.stages.turns), as a stage's are. The
    `jobs` jobs of a case start their timed steps together (a file each in `start_line`): one
    job's imports (seconds of CPU) must not fall in the other's timed window."""
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from throughput import Bench

    from harness.plan import studies

    torch.set_num_threads(threads)
    cfg = next(c.config for c in studies.expand(studies.load_study("table3"), "smoke", controls=False)
               if c.config.segments.size == 2)
    step = Bench(cfg, torch.device("cpu"), batch).synthetic()
    cpu = cpu_turns.for_cpu(turns)
    for _ in range(3):
        with cpu.turn(threads):
            step()
    (start_line / str(os.getpid())).touch()
    while len(list(start_line.iterdir())) < jobs:
        time.sleep(0.001)
    start, steps = time.perf_counter(), 0
    for _ in cpu.each(iter(lambda: time.perf_counter() - start < seconds, False), threads):
        step()
        steps += 1
    print(json.dumps({"rate": batch * steps / (time.perf_counter() - start)}))


OPENMP = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def run_jobs(n: int, threads: int, turns: bool, setting: str, seconds: float, batch: int) -> list[float]:
    """Start `n` jobs at once with `setting` ("default" or NAME=VALUE) in their environment, each
    step in a turn of the CPU or not; their images per second."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP}
    if setting != "default":
        name, _, value = setting.partition("=")
        env[name] = value
    with tempfile.TemporaryDirectory() as start_line:
        cmd = [sys.executable, __file__, "--job", "--seconds", str(seconds), "--batch", str(batch),
               "--threads", str(threads), "--start-line", start_line, "--jobs", str(n),
               *(["--turns"] if turns else [])]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a job failed: {outs}")
    return [json.loads(o.strip().splitlines()[-1])["rate"] for o in outs]


def uncontended_turn_us(repeats: int = 2000) -> float:
    """Microseconds to take a turn of every core and give it back, with nobody else waiting."""
    with tempfile.TemporaryDirectory() as folder:
        turns = cpu_turns.CpuTurns(Path(folder), os.cpu_count() or 1)
        start = time.perf_counter()
        for _ in range(repeats):
            with turns.turn(os.cpu_count() or 1):
                pass
        return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time of each job, after warm-up")
    ap.add_argument("--batch", type=int, default=16, help="the smoke recipe's pre-training batch")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of a job alone")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over the settings, each from another case (this VM's speed drifts); medians "
                         "printed; 5 puts every case once in every position")
    ap.add_argument("--envs", nargs="+", default=["default", "OMP_WAIT_POLICY=passive", "GOMP_SPINCOUNT=10000"],
                    help="OpenMP settings to compare: default, or NAME=VALUE")
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start-line", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        job(args.seconds, args.batch, args.threads, args.turns, args.start_line, args.jobs)
        return
    t = args.threads
    cases = [(f"1 job, {t} threads", 1, t, False), (f"1 job, {t} threads, turns", 1, t, True),
             (f"2 jobs, {t} threads each", 2, t, False), ("2 jobs, 1 thread each", 2, 1, False),
             (f"2 jobs, {t} threads, turns", 2, t, True)]
    rates: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.repeats):
        for setting in args.envs:
            # each round starts at another case (this VM's speed drifts with what ran just before,
            # and its host slows it after some time at full load): over len(cases) rounds each
            # case runs once in every position
            k = round_ % len(cases)
            for name, n, threads, turns in cases[k:] + cases[:k]:
                rates.setdefault((setting, name), []).extend(
                    run_jobs(n, threads, turns, setting, args.seconds, args.batch))
    print(f"# smoke pre-training step (batch {args.batch}), {os.cpu_count()} cores, fp32; "
          f"{args.seconds:g} s per job after warm-up; {args.repeats} round(s), medians over rounds and jobs")
    print(f"{'setting':<24} {'case':<26} {'img/s per job':>14} {'range':>15} {'of alone':>9} {'of default alone':>17}")
    alone = {setting: statistics.median(rates[(setting, cases[0][0])]) for setting in args.envs}
    reference = alone.get("default")
    for setting in args.envs:
        for name, *_ in cases:
            values = rates[(setting, name)]
            median = statistics.median(values)
            of_default = f"{median / reference:.0%}" if reference else ""
            print(f"{setting:<24} {name:<26} {median:14.1f} {f'{min(values):.0f}-{max(values):.0f}':>15} "
                  f"{median / alone[setting]:9.0%} {of_default:>17}", flush=True)
    print(f"a turn of every core taken and given back, nobody waiting: {uncontended_turn_us():.1f} us "
          f"(a job takes one every {cpu_turns.CpuTurns.quantum_s:g} s of steps)")


if __name__ == "__main__":
    main()
