"""The benchmark script runs end to end on the CPU (a handful of steps; no time is asserted)."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_measures_every_path_and_projects_the_tables():
    # One thread: beside the other pytest worker's jobs on 2 cores, a 2-thread step at batch 4
    # waits at every OpenMP barrier for a descheduled thread (docs/findings.md: 0.4 img/s, not 25).
    out = subprocess.run([sys.executable, "benchmarks/throughput.py", "--device", "cpu", "--batch", "4", "--steps",
                          "1", "--images", "64", "--workers", "0", "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {}
    for line in out.stdout.splitlines():
        parts = line.rsplit(None, 3)
        if len(parts) == 4 and not line.startswith(("#", "path", "table")):
            try:
                rows[parts[0]] = float(parts[1])
            except ValueError:
                pass
    for path in ("synthetic", "dense (no masks)", "naive peer", "device data", "DataLoader, 0 workers",
                 "linear probe, synthetic (batch 4)", "linear probe, device data", "linear probe, DataLoader, 0 workers",
                 "fine-tuning, synthetic (batch 4)", "fine-tuning, DataLoader, 0 workers, rand-m9-mstd0.5-inc1"):
        assert path in rows and rows[path] > 0 and math.isfinite(rows[path]), (path, out.stdout)
    projected = [line.split() for line in out.stdout.splitlines() if line.startswith("table")]
    assert [p[0] for p in projected[1:]] == [f"table{i}" for i in range(1, 11)]  # header, then every table
    assert all(float(p[2]) > 0 for p in projected[1:])


def test_tracking_load_counts_every_write_of_every_job():
    out = subprocess.run([sys.executable, "benchmarks/tracking_load.py", "--n", "3", "--stores", "sqlite",
                          "--seconds", "2", "--epoch-s", "0.5", "--system-s", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    row = json.loads(out.stdout.splitlines()[0])
    assert row["n"] == 3 and row["jobs_missing"] == 0 and row["runs_lost"] == 0 and row["runs_duplicated"] == 0
    assert row["calls"] >= 3 * (1 + 4 + 2 + 2) and row["p50_ms"] > 0  # open, 4 epochs, 2 samples, artifact, end


def test_sharing_measures_every_case_and_the_price_of_a_turn(tmp_path):
    # The turns of these jobs are the benchmark's own, away from the other worker's stage jobs.
    env = {**os.environ, "HARNESS_CPU_TURNS_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "benchmarks/sharing.py", "--seconds", "0.6", "--batch", "2", "--threads", "2",
                          "--repeats", "1", "--envs", "default", "--quanta", "0.1", "0.3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("default ")]
    cases = ["1 job, 2 threads", "2 jobs, 2 threads each", "2 jobs, 1 thread each", "1 job, 2 threads, turns, q=0.1",
             "1 job, 2 threads, turns, q=0.3", "2 jobs, 2 threads, turns, q=0.1", "2 jobs, 2 threads, turns, q=0.3"]
    assert [next(c for c in cases if f" {c} " in row) for row in rows] == cases, out.stdout
    assert all(float(re.search(r" (\d+\.\d) +\d+-\d+ ", row).group(1)) > 0 for row in rows), out.stdout
    # A and B, alone and together, are the same two processes: each one's share is of its own speed alone
    shares = [re.findall(r"\b([AB]) (\d+)%", row) for row in rows]
    assert shares[0] == [] and shares[2] == [], out.stdout
    assert all([j for j, _ in s] == ["A", "B"] and all(int(p) > 0 for _, p in s)
               for s in [shares[1]] + shares[3:]), out.stdout
    assert "nobody waiting:" in out.stdout and list(tmp_path.iterdir()), out.stdout  # the jobs took turns there
