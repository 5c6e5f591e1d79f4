"""Task handlers that test subprocesses load through ``taskqueue.handlers`` settings."""

from __future__ import annotations

import os
from typing import Any

import trio

from triomcp.taskqueue import Task, TaskContext


async def sleep_then_answer(task: Task, ctx: TaskContext) -> Any:
    """Sleep ``payload.seconds`` (reporting progress), then say which process ran it."""
    seconds = float(task.payload.get("seconds", 1.0))
    await ctx.report_progress(0.1, "started")
    await trio.sleep(seconds)
    return {"pid": os.getpid(), "node": os.environ.get("TRIOMCP_TEST_NODE_NAME")}


async def sleep_then_say_who(task: Task, ctx: TaskContext) -> Any:
    """Sleep ``payload.seconds``, then say who ran it: the claiming node's peer id for a task of another
    owner (a mesh worker's source names it), ``local`` for the owner's own workers."""
    await trio.sleep(float(task.payload.get("seconds", 0.0)))
    return {"ran_by": getattr(ctx.source, "holder", ctx.source.name)}
