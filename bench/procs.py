"""Processes the benchmarks start: stderr goes to a file, never to a pipe nobody reads.

A server whose stderr is a pipe blocks in its first write once the pipe's 64 KiB are
full, holding the logging lock, and every thread that logs after it waits forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO

__all__ = ["cpu_seconds", "settle", "spawn", "stderr_of", "stop"]

_logs: dict[int, IO[bytes]] = {}


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python ARGS`` in its own session, stdout discarded, stderr kept in a temporary file."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    _logs[proc.pid] = log
    return proc


def stderr_of(proc: subprocess.Popen[bytes], limit: int = 4000) -> str:
    """The last ``limit`` characters the process wrote to stderr."""
    log = _logs.get(proc.pid)
    if log is None:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def stop(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) the process group, wait, and drop the stderr file."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    log = _logs.pop(proc.pid, None)
    if log is not None:
        log.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # the process has gone
        return 0.0


def settle(pids: list[int], *, idle_share: float = 0.1, window: float = 0.1, limit: float = 20.0) -> float:
    """Wait until these processes together use under ``idle_share`` of a core; returns seconds waited.

    After a measurement, a server may still be finishing calls the load generator gave up on (a
    host-per-call bridge tears hosts down for seconds); the next design must not pay for that."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = sum(_cpu_or_zero(p) for p in pids)
        time.sleep(window)
        if sum(_cpu_or_zero(p) for p in pids) - before < idle_share * window:
            break
    return time.monotonic() - start
