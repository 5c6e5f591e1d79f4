"""Task handlers the reliability runs load into server processes (``taskqueue.handlers``).

Every run appends one line when it starts and one when it finishes to ``payload.log``, so a
run can count how many times each task's handler started and finished, whatever the queue says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from triomcp.taskqueue import Task, TaskContext

HANDLERS = {"rel.record": "reliability.handlers:record"}
"""The ``taskqueue.handlers`` setting that loads these handlers into a node."""


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def record(task: Task, ctx: TaskContext) -> Any:
    """Log ``start``, sleep ``payload.seconds``, log ``done``; answer which process ran it."""
    log = str(task.payload["log"])
    node = os.environ.get("TRIOMCP_TEST_NODE_NAME", "?")
    await trio.to_thread.run_sync(_append, log, f"start {task.id} {node} {os.getpid()}")
    await trio.sleep(float(task.payload.get("seconds", 0.0)))
    await trio.to_thread.run_sync(_append, log, f"done {task.id} {node} {os.getpid()}")
    return {"node": node, "pid": os.getpid()}


def read_log(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(starts per task id, finishes per task id) from a handler log."""
    starts: dict[str, int] = {}
    done: dict[str, int] = {}
    if not path.exists():
        return starts, done
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            target = starts if parts[0] == "start" else done
            target[parts[1]] = target.get(parts[1], 0) + 1
    return starts, done
