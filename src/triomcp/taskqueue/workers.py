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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import trio

from triomcp.errors import ConfigError, LeaseLost, NoHandler, PeerError, StoreUnavailable, TriomcpError
from triomcp.taskqueue.model import Lease, Task
from triomcp.taskqueue.store import unavailable_delay

__all__ = [
    "HANDLER_GROUP", "Handler", "HandlerRegistry", "NeedsInput", "NonRetryable", "TaskContext", "TaskSource", "run_one",
    "run_workers",
]

log = logging.getLogger("triomcp.taskqueue")

HANDLER_GROUP = "triomcp.handlers"
OUTCOME_RETRY_CAP = 1.0
"""Longest pause (seconds) between two attempts to record an outcome."""
SHUTDOWN_PATIENCE = 10.0
"""How long a worker being shut down keeps trying to record an outcome."""


class TaskSource(Protocol):
    """Where a worker gets tasks and reports outcomes (the local queue, or a peer's)."""

    name: str

    async def wait_claim(self, holder: str, task_types: Sequence[str]) -> Lease: ...
    async def renew(self, task_id: str, token: str) -> Lease: ...
    async def report_progress(self, task_id: str, token: str, fraction: float, message: str | None = None) -> Any: ...
    async def complete(self, task_id: str, token: str, result: Any) -> Any: ...
    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Any: ...
    async def release(self, task_id: str, token: str) -> Any: ...
    async def confirm_cancelled(self, task_id: str, token: str) -> Any: ...
    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Any: ...


@dataclass
class TaskContext:
    """What a handler gets besides the task."""

    task: Task
    source: TaskSource
    token: str

    async def report_progress(self, fraction: float, message: str | None = None) -> None:
        await self.source.report_progress(self.task.id, self.token, fraction, message)


Handler = Callable[[Task, TaskContext], Awaitable[Any]]


class NonRetryable(TriomcpError):
    """Raise from a handler to fail the task for good (no more attempts)."""

    code = "non_retryable"


class NeedsInput(TriomcpError):
    """Raise from a handler that needs answers from outside before it can go on.

    The task waits (``WAITING``, not claimable) until every request is answered with
    ``TaskQueue.provide_input``; then it runs again from the start with every answer so far in
    ``task.responses``. Handlers therefore ask before they act. Keys must be unique over the task's
    life (a key answered once means that answer)."""

    code = "needs_input"

    def __init__(self, requests: dict[str, Any]) -> None:
        super().__init__(f"waiting for input: {', '.join(sorted(requests))}")
        self.requests = requests


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

    async def keep_lease() -> None:
        while True:
            await trio.sleep(renew_every)
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

    async def watch_cancel() -> None:
        waiter = getattr(source, "wait_cancel_requested", None)
        if waiter is None:
            await trio.sleep_forever()
        await waiter(task.id)
        why_stopped.append("cancelled")
        handler_scope.cancel()

    outcome: tuple[str, Any] | None = None
    stopping = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_lease)
            nursery.start_soon(watch_cancel)
            with handler_scope:
                try:
                    result = await handler(task, TaskContext(task, source, token))
                    outcome = ("complete", result)
                except NeedsInput as need:
                    outcome = ("suspend", need.requests)
                except NonRetryable as err:
                    outcome = ("fail_final", err.to_dict())
                except TriomcpError as err:
                    outcome = ("fail", err.to_dict())
                except Exception as exc:
                    log.exception("task %s (%s) failed", task.id, task.type)
                    outcome = ("fail", {"code": "handler_error", "message": f"{type(exc).__name__}: {exc}"})
            nursery.cancel_scope.cancel()
    except trio.Cancelled:
        stopping = True
        raise
    finally:
        # Keep trying as long as the lease may hold (3 renewal periods): the owner may be restarting,
        # and giving up means running the task again once the lease expires. A worker being shut down
        # (now or while it retries) still tries, shielded, for SHUTDOWN_PATIENCE.
        patience = max(SHUTDOWN_PATIENCE, 3 * renew_every)
        if stopping:
            await _record_shielded(source, task, token, outcome, why_stopped)
        else:
            try:
                with trio.move_on_after(patience) as waited:
                    await _record(source, task, token, outcome, why_stopped)
            except trio.Cancelled:
                await _record_shielded(source, task, token, outcome, why_stopped)
                raise
            if waited.cancelled_caught:
                log.error("task %s: the outcome could not be recorded within %.0f s; it runs again once its "
                          "lease expires", task.id, patience)


async def _record_shielded(source: TaskSource, task: Task, token: str, outcome: tuple[str, Any] | None,
                           why_stopped: list[str]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_PATIENCE) as waited:
        await _record(source, task, token, outcome, why_stopped)
    if waited.cancelled_caught:
        log.error("task %s: shutting down, the outcome could not be recorded within %.0f s; it runs again "
                  "once its lease expires", task.id, SHUTDOWN_PATIENCE)


async def _record(source: TaskSource, task: Task, token: str, outcome: tuple[str, Any] | None,
                  why_stopped: list[str]) -> None:
    """Record the outcome; a transient refusal (a busy or restarting peer, a broken stream, a locked
    database) is retried with growing pauses until the caller's deadline."""
    attempt = 0
    while True:
        try:
            if outcome is None:
                if "cancelled" in why_stopped:
                    await source.confirm_cancelled(task.id, token)
                elif "lease_lost" not in why_stopped:
                    await source.release(task.id, token)  # shutdown: give the task back
            elif outcome[0] == "complete":
                await source.complete(task.id, token, outcome[1])
            elif outcome[0] == "suspend":
                await source.suspend(task.id, token, outcome[1])
            elif outcome[0] == "fail_final":
                await source.fail(task.id, token, outcome[1], retry=False)
            else:
                await source.fail(task.id, token, outcome[1], retry=True)
            if attempt:
                log.info("task %s: outcome recorded after %d retries", task.id, attempt)
            return
        except LeaseLost:
            log.warning("task %s: the lease was lost before the outcome was recorded; "
                        "another worker owns it now", task.id)
            return
        except (PeerError, StoreUnavailable) as exc:
            (log.warning if attempt == 0 else log.debug)(
                "task %s: recording the outcome failed (%s); retrying", task.id, exc)
            await trio.sleep(unavailable_delay(attempt, cap=OUTCOME_RETRY_CAP))
            attempt += 1
        except Exception as exc:  # not transient (the task changed meanwhile, a bug): trying again won't help
            log.error("task %s: recording the outcome failed: %s", task.id, exc)
            return


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
        failures = 0
        while True:
            try:
                lease = await source.wait_claim(holder, [task_type])
            except StoreUnavailable as exc:  # disk full, database locked: wait, and claim again
                failures += 1
                delay = unavailable_delay(failures)
                log.warning("claiming %s tasks failed (%s); retrying in %.2f s", task_type, exc, delay)
                await trio.sleep(delay)
                continue
            failures = 0
            await run_one(source, lease, handler, renew_every=lease_seconds / 3)

    async with trio.open_nursery() as nursery:
        for task_type in types:
            limit = concurrency.get(task_type, concurrency.get("*", 1))
            for _ in range(max(0, limit)):
                nursery.start_soon(worker_loop, task_type)
        task_status.started()
        if not types:
            await trio.sleep(math.inf)
