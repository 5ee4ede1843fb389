"""What the kernel says of a process (Linux's /proc): its state and when it started.

A pid alone does not name a process: once it ends, its number can be given to another. A pid
with its start time does (harness.run.forwarder follows its stage by both).
"""
from __future__ import annotations

import os


def stat(pid: int | str = "self") -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of process `pid`, from /proc/<pid>/stat
    (fields 3 and 22; the name in field 2 may hold spaces and parentheses); None when there is
    no such process, or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def age_s(pid: int | str = "self") -> float | None:
    """Seconds since process `pid` started, by the kernel's clock of it; None when unknown."""
    found = stat(pid)
    try:
        with open("/proc/uptime") as uptime:
            return None if found is None else float(uptime.read().split()[0]) - found[1] / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
