"""Recording a handler's outcome with the source it came from: the patience of a worker.

The outcome of one run (completed, failed, suspended; or nothing, when the handler
was stopped) is reported to the task's source exactly once. A transient refusal (a
busy or restarting peer, a broken stream, a locked database) is retried with growing
pauses (:func:`triomcp._retry.retry_transient`, capped at :data:`OUTCOME_RETRY_CAP`) for
as long as the lease may still hold: giving up means the task runs again once its lease
expires. A worker being shut down keeps trying, shielded, for :data:`SHUTDOWN_PATIENCE`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from triomcp._retry import retry_transient
from triomcp.errors import LeaseLost, PeerError, StoreUnavailable
from triomcp.taskqueue.model import Task
from triomcp.taskqueue.source import TaskSource

__all__ = ["OUTCOME_RETRY_CAP", "SHUTDOWN_PATIENCE", "Outcome", "record_outcome"]

log = logging.getLogger("triomcp.taskqueue")

OUTCOME_RETRY_CAP = 1.0
"""Longest pause (seconds) between two attempts to record an outcome."""
SHUTDOWN_PATIENCE = 10.0
"""How long a worker being shut down keeps trying to record an outcome."""

Outcome = tuple[str, Any] | None
"""``("complete", result)``, ``("suspend", requests)``, ``("fail_final", error)``, ``("fail", error)``,
or None: the handler did not finish (stopped by a cancel request, a lost lease, or shutdown)."""


async def record_outcome(source: TaskSource, task: Task, token: str, outcome: Outcome,
                         why_stopped: list[str], *, renew_every: float, stopping: bool) -> None:
    """Record ``outcome``: for as long as the lease may hold (3 renewal periods, at least
    :data:`SHUTDOWN_PATIENCE`), or, when the worker is ``stopping`` (or is stopped meanwhile),
    shielded for :data:`SHUTDOWN_PATIENCE`. The owner may be restarting."""
    patience = max(SHUTDOWN_PATIENCE, 3 * renew_every)
    if stopping:
        await _record_shielded(source, task, token, outcome, why_stopped)
        return
    try:
        with trio.move_on_after(patience) as waited:
            await _record(source, task, token, outcome, why_stopped)
    except trio.Cancelled:
        await _record_shielded(source, task, token, outcome, why_stopped)
        raise
    if waited.cancelled_caught:
        log.error("task %s: the outcome could not be recorded within %.0f s; it runs again once its "
                  "lease expires", task.id, patience)


async def _record_shielded(source: TaskSource, task: Task, token: str, outcome: Outcome,
                           why_stopped: list[str]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_PATIENCE) as waited:
        await _record(source, task, token, outcome, why_stopped)
    if waited.cancelled_caught:
        log.error("task %s: shutting down, the outcome could not be recorded within %.0f s; it runs again "
                  "once its lease expires", task.id, SHUTDOWN_PATIENCE)


async def _record(source: TaskSource, task: Task, token: str, outcome: Outcome,
                  why_stopped: list[str]) -> None:
    """Record the outcome; a transient refusal is retried with growing pauses until the caller's deadline."""
    try:
        await retry_transient(lambda: _report(source, task, token, outcome, why_stopped),
                              transient=(PeerError, StoreUnavailable),
                              what=f"task {task.id}: recording the outcome", log=log, cap=OUTCOME_RETRY_CAP)
    except LeaseLost:
        log.warning("task %s: the lease was lost before the outcome was recorded; another worker owns it now",
                    task.id)
    except Exception as exc:  # not transient (the task changed meanwhile, a bug): trying again won't help
        log.error("task %s: recording the outcome failed: %s", task.id, exc)


async def _report(source: TaskSource, task: Task, token: str, outcome: Outcome,
                  why_stopped: list[str]) -> None:
    """One attempt to tell the source how the run ended."""
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
