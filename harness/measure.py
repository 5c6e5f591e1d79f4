"""What a process costs, read from Linux ``/proc``: CPU time, resident memory, and a wait until idle."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds", "rss_kib", "settle"]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_exact(pid: int) -> float:
    """CPU time the process's threads have spent on a CPU so far, to the nanosecond (the sum of
    ``/proc/<pid>/task/*/schedstat``; ``cpu_seconds`` counts in clock ticks of 10 ms, too coarse
    for an idle process over a few seconds). Threads that ended before the call are not counted."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def rss_kib(pid: int) -> int | None:
    """Resident set size (``VmRSS``) of ``pid`` in KiB; None when unknown (the process has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # the process has gone
        return 0.0


def settle(pids: Iterable[int], *, idle_share: float = 0.1, window: float = 0.1, limit: float = 20.0) -> float:
    """Wait until these processes together use under ``idle_share`` of a core (measured over
    ``window`` seconds), at most ``limit`` seconds; returns the seconds waited.

    After a measurement, a server may still be finishing calls the load generator gave up on (a
    host-per-call bridge tears hosts down for seconds); the next measurement must not pay for that."""
    pids = list(pids)
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = sum(_cpu_or_zero(p) for p in pids)
        time.sleep(window)
        if sum(_cpu_or_zero(p) for p in pids) - before < idle_share * window:
            break
    return time.monotonic() - start
