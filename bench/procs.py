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
from typing import IO

__all__ = ["spawn", "stderr_of", "stop"]

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
