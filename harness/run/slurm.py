"""What Slurm says: partitions and their nodes (before submission), a job's state and reason
(while it waits or runs), how it ended (after). Every call is one of Slurm's own commands."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "SUSPENDED", "RESIZING"}
LIVE = WAITING | {"RUNNING", "COMPLETING"}


class SlurmError(RuntimeError):
    """Slurm cannot be asked (no sinfo, no controller)."""


def run(*cmd: str, timeout: float = 60) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"Slurm's {cmd[0]} is not on PATH; run from a Slurm login node or use --profile local")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:
        raise SlurmError(f"{cmd[0]} failed ({err})") from None
    if out.returncode != 0:
        raise SlurmError(f"{cmd[0]} failed ({(out.stderr or out.stdout).strip()}); is the cluster up?")
    return out.stdout


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    default: bool  # the partition is the cluster's default
    cpus: int
    mem_gb: float
    gpus: int
    time_limit_min: float | None  # the partition's; None: infinite

    def offers(self) -> str:
        return f"{self.cpus} CPUs, {self.mem_gb:.1f} GB, {self.gpus} GPUs"


def minutes(limit: str) -> float | None:
    """A Slurm time limit ("infinite", "1-02:03:04", "02:03:04", "03:04", "5") in minutes."""
    if limit in ("infinite", "UNLIMITED", "NONE", "n/a"):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def gpus(gres: str) -> int:
    """GPUs in a gres string such as "gpu:2", "gpu:a100:4(S:0-1)", "(null)"."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[\w-]+)?:(\d+)", gres))


def nodes() -> list[Node]:
    """Every (node, partition) pair the cluster has."""
    out = run("sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G|%l")
    found = []
    for line in out.splitlines():
        name, partition, cpus, mem, gres, limit = line.strip().split("|")
        found.append(Node(name, partition.rstrip("*"), partition.endswith("*"), int(cpus), int(mem) / 1024,
                          gpus(gres), minutes(limit)))
    return found


def final_state(job_id: str) -> str:
    """How a job ended, from accounting (COMPLETED, FAILED, CANCELLED, OUT_OF_MEMORY, TIMEOUT...)."""
    try:
        out = run("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State", timeout=30)
    except SlurmError:
        return "UNKNOWN"
    states = [s.split()[0] for s in out.split() if s.strip() and s.split()[0].isupper()]
    return states[-1] if states else "UNKNOWN"


def cancel(job_id: str) -> None:
    try:
        run("scancel", str(job_id), timeout=30)
    except SlurmError:
        pass
