"""Workers: claim tasks from a source, run the registered handler, record the outcome once.

Execution is at-least-once (a lease that expires runs the task again elsewhere);
recording the outcome is exactly-once (only the current lease holder can
complete or fail, so a stale worker's answer is refused).

A :class:`TaskSource` is where tasks come from: the local :class:`TaskQueue`
satisfies it, and the server adds one per authorized peer (remote claims over
libp2p). Nothing runs code received from the network: a task names a type, and
only handlers registered for that type (entry points of group
``triomcp.handlers`` or settings) ever run.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import entry_points
from typing import Any

import trio

from triomcp._retry import retry_transient
from triomcp.errors import (
    ConfigError,
    LeaseLost,
    NeedsInput,
    NoHandler,
    NonRetryable,
    StoreUnavailable,
    TriomcpError,
)
from triomcp.taskqueue.model import Lease, Task
from triomcp.taskqueue.outcomes import Outcome, record_outcome
from triomcp.taskqueue.source import TaskSource

__all__ = [
    "HANDLER_GROUP", "Handler", "HandlerRegistry", "NeedsInput", "NonRetryable", "TaskContext", "TaskSource",
    "run_one", "run_workers",
]

log = logging.getLogger("triomcp.taskqueue")

HANDLER_GROUP = "triomcp.handlers"


@dataclass
class TaskContext:
    """What a handler gets besides the task."""

    task: Task
    source: TaskSource
    token: str

    async def report_progress(self, fraction: float, message: str | None = None) -> None:
        await self.source.report_progress(self.task.id, self.token, fraction, message)


Handler = Callable[[Task, TaskContext], Awaitable[Any]]


class HandlerRegistry:
    """Task type -> handler. Filled by code, entry points and settings; never by the network."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, task_type: str, handler: Handler) -> None:
        if task_type in self._handlers:
            raise ValueError(f"a handler for {task_type!r} is already registered")
        self._handlers[task_type] = handler

    def get(self, task_type: str) -> Handler:
        try:
            return self._handlers[task_type]
        except KeyError:
            raise NoHandler(f"no handler for task type {task_type!r} on this node") from None

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def load_entry_points(self) -> list[str]:
        loaded = []
        for ep in entry_points(group=HANDLER_GROUP):
            try:
                self.register(ep.name, ep.load())
            except Exception as exc:
                raise ConfigError(f"task handler {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            loaded.append(ep.name)
        return loaded

    def load_settings(self, handlers: dict[str, str]) -> None:
        """``{"task.type": "package.module:function"}`` from the operator's settings."""
        for task_type, target in handlers.items():
            module_name, _, attr = target.partition(":")
            try:
                handler = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigError(f"taskqueue.handlers.{task_type}: cannot load {target!r}: {exc}") from exc
            self.register(task_type, handler)


async def run_one(source: TaskSource, lease: Lease, handler: Handler, *, renew_every: float) -> None:
    """Run one leased task to a recorded outcome (or give the lease back on shutdown)."""
    task, token = lease.task, lease.token
    handler_scope = trio.CancelScope()
    why_stopped: list[str] = []

    async def guard() -> None:
        """Renew the lease every ``renew_every``; stop the handler when a cancel is requested (the local
        queue says so at once) or the lease is lost. One task for both: it is started for every task run."""
        wait_cancel = getattr(source, "wait_cancel_requested", None)
        while True:
            with trio.move_on_after(renew_every):
                if wait_cancel is None:
                    await trio.sleep_forever()
                await wait_cancel(task.id)
                why_stopped.append("cancelled")
                handler_scope.cancel()
                return
            try:
                renewed = await source.renew(task.id, token)
            except LeaseLost:
                why_stopped.append("lease_lost")
                handler_scope.cancel()
                return
            except Exception as exc:  # the source is unreachable: keep trying until the lease runs out
                log.warning("task %s: renewing the lease failed: %s", task.id, exc)
                continue
            if renewed.task.cancel_requested:
                why_stopped.append("cancelled")
                handler_scope.cancel()
                return

    outcome: Outcome = None
    stopping = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard)
            with handler_scope:
                outcome = await _run_handler(handler, task, TaskContext(task, source, token))
            nursery.cancel_scope.cancel()
    except trio.Cancelled:
        stopping = True
        raise
    finally:
        await record_outcome(source, task, token, outcome, why_stopped, renew_every=renew_every,
                             stopping=stopping)


async def _run_handler(handler: Handler, task: Task, ctx: TaskContext) -> Outcome:
    """The handler's outcome: what it returned, or how it failed (a cancellation propagates)."""
    try:
        return ("complete", await handler(task, ctx))
    except NeedsInput as need:
        return ("suspend", need.requests)
    except NonRetryable as err:
        return ("fail_final", err.to_dict())
    except TriomcpError as err:
        return ("fail", err.to_dict())
    except Exception as exc:
        log.exception("task %s (%s) failed", task.id, task.type)
        return ("fail", {"code": "handler_error", "message": f"{type(exc).__name__}: {exc}"})


async def run_workers(
    source: TaskSource,
    registry: HandlerRegistry,
    *,
    holder: str,
    concurrency: dict[str, int],
    lease_seconds: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Claim and run tasks of every registered type, ``concurrency[type]`` (or ``["*"]``) at a time."""
    types = registry.types()

    async def worker_loop(task_type: str) -> None:
        handler = registry.get(task_type)
        while True:  # a database that is unavailable (disk full, locked): wait, and claim again
            lease = await retry_transient(partial(source.wait_claim, holder, [task_type]),
                                          transient=(StoreUnavailable,), what=f"claiming {task_type} tasks",
                                          log=log)
            await run_one(source, lease, handler, renew_every=lease_seconds / 3)

    async with trio.open_nursery() as nursery:
        for task_type in types:
            limit = concurrency.get(task_type, concurrency.get("*", 1))
            for _ in range(max(0, limit)):
                nursery.start_soon(worker_loop, task_type)
        task_status.started()
        if not types:
            await trio.sleep(math.inf)
