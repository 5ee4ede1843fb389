"""What a workflow of N waiting Slurm runs costs: the RPCs slurmctld receives (sdiag) and the
processes and memory it keeps on the login node.

Starts `snakemake --profile slurm` on Table 5 at scale tiny (with as many seeds as N runs need)
and N stage jobs at once, each submitted to start in an hour (`sbatch --begin`: it waits in the
queue, reason BeginTime, and burns no CPU), waits until all N are submitted, then counts slurmctld's
RPCs over a window with two `sdiag` snapshots and sums the memory of Snakemake's process tree.
Stops Snakemake and cancels its jobs at the end. Example:

    .venv/bin/python benchmarks/waiting_runs.py --runs 12 --window 60
    .venv/bin/python benchmarks/waiting_runs.py --runs 6 --repo /tmp/before   # another checkout

The cluster is shared: jobs not submitted by this workflow seen during the window are reported
(`foreign_jobs`), since their launchers' RPCs are counted too (sdiag counts per user, not per
workflow).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def sdiag_rpcs() -> dict[str, int]:
    """slurmctld's RPC counts by message type since its statistics were last reset."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[1].split("Remote Procedure", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)", section, re.M)}


def rpc_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # a count lower than before: someone reset the statistics (sdiag -r) meanwhile
    diff = {k: v - before.get(k, 0) for k, v in after.items()}
    if any(v < 0 for v in diff.values()):
        raise RuntimeError("sdiag's counters were reset during the window; measure again")
    return {k: v for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v}


def workflow_jobs(workdir: Path) -> set[str]:
    ids = set()
    for f in (workdir / "results" / "runs").glob("*/job.json"):
        try:
            ids.add(str(json.loads(f.read_text())["job_id"]))
        except (json.JSONDecodeError, KeyError):
            pass  # being written
    return ids


def queued_jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    return set(out.split())


def cancel_jobs(workdir: Path) -> None:
    """Every job of the workflow: those its launchers recorded, and by name (stage-signature)
    one submitted by a launcher killed before it could record it."""
    runs = {p.name for p in (workdir / "results" / "runs").glob("*")}
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
    named = {line.split()[0] for line in out.splitlines() if line.split()[-1].rpartition("-")[2] in runs}
    ids = workflow_jobs(workdir) | named
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True)


def login_node_cost(root_pid: int) -> dict[str, float]:
    """Processes of the workflow (Snakemake, its job shells, the launchers) and their memory:
    RSS (counts the shared libraries once per process) and PSS (shares them out), for the whole
    tree and for the launchers alone."""
    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    total = {"rss": 0, "pss": 0}
    launchers = {"rss": 0, "pss": 0, "n": 0}
    for p in procs:
        try:
            info, is_launcher = p.memory_full_info(), "harness.run.launch" in " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        for part in (total, launchers) if is_launcher else (total,):
            part["rss"] += info.rss
            part["pss"] += info.pss
        launchers["n"] += is_launcher
    mb = 2**20
    return {"processes": len(procs), "launchers": launchers["n"], "rss_mb": total["rss"] / mb,
            "pss_mb": total["pss"] / mb, "launcher_rss_mb": launchers["rss"] / mb / max(launchers["n"], 1),
            "launcher_pss_mb": launchers["pss"] / mb / max(launchers["n"], 1)}


def measure(runs: int, window_s: float, repo: Path, workdir: Path | None = None, timeout_s: float = 900) -> dict:
    seeds = list(range(-(-runs // 12)))  # Table 5 has 12 stage runs per seed that need nothing first
    executor = ("executor={partition: cpu, gpus_per_node: 0, cpus_per_task: 1, mem_gb: 1, timeout_min: 20, "
                "additional: {begin: now+1hour}}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="waiting-runs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(repo)  # that checkout's harness, not the one this environment installed
    start = sdiag_rpcs()
    t0 = time.time()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", "--directory", str(workdir),
                             "--jobs", str(runs), "--cores", str(runs), "table5", "--config", "scale=tiny", f"seeds={seeds}", executor],
                            cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        while len(workflow_jobs(workdir)) < runs:
            if proc.poll() is not None or time.time() - t0 > timeout_s:
                raise RuntimeError(f"only {len(workflow_jobs(workdir))} of {runs} runs submitted "
                                   f"(snakemake rc {proc.returncode}); log under {workdir}/.snakemake/log")
            time.sleep(1)
        submitted_s = time.time() - t0
        time.sleep(5)  # the last launchers print their first lines
        steady, queued = sdiag_rpcs(), queued_jobs()
        t1 = time.time()
        time.sleep(window_s)
        end, t2 = sdiag_rpcs(), time.time()
        ours = workflow_jobs(workdir)
        cost = login_node_cost(proc.pid)
        foreign = sorted((queued | queued_jobs()) - ours)
    finally:
        # all at once: Snakemake, on SIGTERM, would start the next jobs in place of the killed ones
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cancel_jobs(workdir)
    whole, window = rpc_diff(start, end), rpc_diff(steady, end)
    return {"runs": runs, "seeds": len(seeds), "submitted_after_s": round(submitted_s, 1),
            "window_s": round(t2 - t1, 1), "rpcs_per_s_waiting": round(sum(window.values()) / (t2 - t1), 3),
            "rpcs_per_s_from_start": round(sum(whole.values()) / (t2 - t0), 3),
            "rpcs_waiting": window, "rpcs_from_start": whole, "login_node": cost,
            "foreign_jobs": foreign, "workdir": str(workdir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[6, 12], help="waiting runs, one measurement each")
    ap.add_argument("--window", type=float, default=60, help="seconds of RPC counting while they wait")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose workflow runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = ap.parse_args()
    found = []
    print("runs  RPC/s waiting  RPC/s from start  processes  launchers  RSS MB  PSS MB  "
          "RSS/launcher MB  PSS/launcher MB  foreign jobs")
    for n in args.runs:
        m = measure(n, args.window, args.repo.resolve())
        found.append(m)
        c = m["login_node"]
        print(f"{n:4d}  {m['rpcs_per_s_waiting']:13.2f}  {m['rpcs_per_s_from_start']:16.2f}  {c['processes']:9d}  "
              f"{c['launchers']:9d}  {c['rss_mb']:6.0f}  {c['pss_mb']:6.0f}  {c['launcher_rss_mb']:15.1f}  "
              f"{c['launcher_pss_mb']:15.1f}  {len(m['foreign_jobs'])}", flush=True)
        print(f"      RPCs while waiting: {m['rpcs_waiting']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    sys.exit(main())
