"""What a short stage job spends starting up: two checkouts side by side, in one run.

    python benchmarks/startup.py [--before /path/to/other/checkout] [--repeats 3]

Each sample is what Snakemake runs for three stage runs of one workflow, in a fresh results
folder: the launchers (`python -m harness.run.launch`) of Table 3's M=4, M=1 and M=2
pre-trainings at scale tiny, one epoch each (4 steps of 64 images), on the local executor with
the sqlite store. The first two jobs of a workflow start cold; in a checkout with warm starts
(harness.run.warm) the second starts the server, and the third job is timed once that serves
(a checkout without them: the third starts cold too). The first and the third are timed. For each job: from its launcher's
start to the end of the first epoch (the run's progress.json appears: start-up plus 4 steps)
and to the launcher's end (the result written, tracking delivered, the job reaped); and, where
the checkout records it (progress.json's `startup_s`), the job's own start-up: from its
process's start (a warm job's: its client's, the process submitit starts) to the end of its
first training step (interpreter, imports, data, model, one step). The checkouts alternate so
that both see the same machine. Each checkout runs its own code (PYTHONPATH) with this
interpreter. No threshold is asserted.
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

ROOT = Path(__file__).resolve().parent.parent

WRITE_JOB = """
import json, sys
from pathlib import Path
try:
    from harness.workflow.plan import Plan
    from harness.workflow.jobs import job_args, write_job_files
except ImportError:  # a checkout from before harness/workflow
    from harness.plan.workflow import Plan
    job_args = lambda plan, sig, stage: plan.job_args(sig, stage)
    write_job_files = lambda plan: plan.write_job_files()
plan = Plan("tiny", {"cpus_per_task": 2}, {"pretrain": {"epochs": 1}}, only=["table3"])
jobs = []
for setting in ("square M=4", "square M=1", "square M=2"):
    sig = next(s for s, r in plan.runs.items() if r.stage == "pretrain" and r.cells[0].setting == setting)
    jobs.append([plan.launch_args(sig, "pretrain"), job_args(plan, sig, "pretrain"), sig])
write_job_files(plan)
print(json.dumps(jobs))
"""
SERVING_WAIT_S = 60.0  # how long the second job waits for a warm server to serve


def time_job(tmp: str, env: dict, launch: str, job: str, sig: str, repo: Path) -> tuple[float, float, float | None]:
    """(seconds to the first epoch's end, seconds to the launcher's end, the job's own seconds
    from its process start to its first step's end or None) of one launcher."""
    import shlex

    progress = Path(tmp) / "results" / "runs" / sig / "progress.json"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness.run.launch", *shlex.split(launch), *shlex.split(job)],
                            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first, startup = None, None
    while proc.poll() is None:
        if first is None and progress.exists():
            first = time.perf_counter() - start
            startup = json.loads(progress.read_text()).get("startup_s")
        time.sleep(0.01)
    end = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{repo}: the launcher failed: {proc.stderr.read()[-2000:]}")
    if first is None:
        startup = json.loads(progress.read_text()).get("startup_s")
    return first if first is not None else end, end, startup


def sample(repo: Path) -> list[tuple[float, float, float | None]]:
    """The first job's and the second job's times (time_job) in one fresh results folder."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        jobs = json.loads(subprocess.run([sys.executable, "-c", WRITE_JOB], cwd=tmp, env=env, check=True,
                                         capture_output=True, text=True).stdout)
        times = [time_job(tmp, env, *jobs[0], repo)]
        time_job(tmp, env, *jobs[1], repo)  # a second job starts the warm server, if the checkout has them
        logs = Path(tmp) / "results" / ".warm"
        deadline = time.time() + SERVING_WAIT_S
        while logs.exists() and not any("serving" in log.read_text() for log in logs.glob("*.log")):
            if time.time() > deadline:
                raise SystemExit(f"{repo}: no warm server served within {SERVING_WAIT_S:g} s: "
                                 + " ".join(log.read_text() for log in logs.glob("*.log")))
            time.sleep(0.1)
        times.append(time_job(tmp, env, *jobs[2], repo))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="another checkout to compare with (e.g. a git worktree)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    repos = {"this checkout": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    times: dict[str, list[list[tuple[float, float, float | None]]]] = {name: [] for name in repos}
    for _ in range(args.repeats):
        for name, repo in repos.items():
            times[name].append(sample(repo))
    print(f"# tiny pre-training jobs (1 epoch of 4 steps), local executor, sqlite store; {os.cpu_count()} cores; "
          f"median of {args.repeats} (min-max), seconds")
    print(f"{'checkout':<14} {'job':<22} {'job: process start to first step':>34} {'to the first epoch end':>24} "
          f"{'to the launcher end':>22}")
    for name, samples in times.items():
        for k, job in enumerate(("first (cold)", "third (warm if any)")):
            cols = []
            for i in (2, 0, 1):
                values = [s[k][i] for s in samples if s[k][i] is not None]
                cols.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-")
            print(f"{name:<14} {job:<22} {cols[0]:>34} {cols[1]:>24} {cols[2]:>22}")


if __name__ == "__main__":
    main()
