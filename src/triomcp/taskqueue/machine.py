"""The task lifecycle: one transition table and pure functions over immutable tasks.

Everything that changes a task's state lives here; the store only persists
what these functions return. ::

    (state,  event)              -> state
    (QUEUED, claim)              -> LEASED      attempts + 1, new lease token
    (LEASED, renew)              -> LEASED      holder + token only
    (LEASED, progress)           -> LEASED      holder + token only
    (LEASED, complete)           -> SUCCEEDED   holder + token only
    (LEASED, fail_retry)         -> QUEUED      backoff; attempts remain
    (LEASED, fail_final)         -> FAILED      the handler said: do not retry
    (LEASED, exhausted)          -> DEAD        failed or expired with no attempts left
    (LEASED, expire)             -> QUEUED      the lease ran out; attempts remain
    (LEASED, release)            -> QUEUED      graceful shutdown: the attempt is given back
    (QUEUED, cancel)             -> CANCELLED   at once
    (LEASED, cancel)             -> LEASED      cancel_requested; the holder stops the handler
    (LEASED, cancelled)          -> CANCELLED   the holder confirms, or the lease expires
    (LEASED, suspend)            -> WAITING     the handler needs input; the attempt is given back
    (WAITING, provide)           -> WAITING     some requests answered, others still open
    (WAITING, provide)           -> QUEUED      every request answered: run again with the answers
    (WAITING, cancel)            -> CANCELLED   at once
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any, TypedDict

from triomcp._retry import Backoff
from triomcp.errors import InvalidTransition, LeaseLost
from triomcp.taskqueue.model import Task, TaskState

__all__ = ["TRANSITIONS", "attempts_left", "expire", "fail", "transition"]

Q, L, W = TaskState.QUEUED, TaskState.LEASED, TaskState.WAITING
TRANSITIONS: dict[tuple[TaskState, str], TaskState] = {
    (Q, "claim"): L,
    (L, "renew"): L,
    (L, "progress"): L,
    (L, "complete"): TaskState.SUCCEEDED,
    (L, "fail_retry"): Q,
    (L, "fail_final"): TaskState.FAILED,
    (L, "exhausted"): TaskState.DEAD,
    (L, "expire"): Q,
    (L, "release"): Q,
    (Q, "cancel"): TaskState.CANCELLED,
    (L, "cancel"): L,
    (L, "cancelled"): TaskState.CANCELLED,
    (L, "suspend"): W,
    (W, "provide"): W,
    (W, "cancel"): TaskState.CANCELLED,
}
HOLDER_EVENTS = frozenset({"renew", "progress", "complete", "fail_retry", "fail_final", "exhausted",
                           "release", "cancelled", "suspend"})
"""Events only the current lease holder may cause (checked by token)."""


class _Step(TypedDict):
    """What every transition changes."""

    state: TaskState
    updated_at: float
    version: int


class _NoLease(TypedDict):
    """What every transition that ends the lease clears."""

    lease_holder: None
    lease_token: None
    lease_expires_at: None


_NO_LEASE: _NoLease = {"lease_holder": None, "lease_token": None, "lease_expires_at": None}


def attempts_left(task: Task) -> bool:
    return task.max_attempts == 0 or task.attempts < task.max_attempts


def transition(
    task: Task, event: str, *, now: float, token: str | None = None, by_queue: bool = False, **data: Any
) -> Task:
    """Apply ``event`` to ``task``; raises InvalidTransition or LeaseLost.

    ``by_queue`` marks events the queue itself causes (lease expiry), which skip the holder check.
    """
    key = (task.state, event)
    if key not in TRANSITIONS:
        raise InvalidTransition(f"task {task.id} is {task.state.value}: cannot {event.replace('_', ' ')}")
    if event in HOLDER_EVENTS and not by_queue:
        if token is None or token != task.lease_token:
            raise LeaseLost(f"task {task.id}: this worker does not hold its lease")
        if task.lease_expires_at is not None and now >= task.lease_expires_at and event != "release":
            raise LeaseLost(f"task {task.id}: the lease expired at {task.lease_expires_at:.3f}")
    new_state = TRANSITIONS[key]
    if event == "provide":
        return _provide(task, data["responses"], now=now)
    common: _Step = {"state": new_state, "updated_at": now, "version": task.version + 1}
    if event == "claim":
        return replace(task, **common, attempts=task.attempts + 1, lease_holder=data["holder"],
                       lease_token=secrets.token_urlsafe(18), lease_expires_at=now + data["lease_seconds"],
                       progress=None, progress_message=None)
    if event == "renew":
        return replace(task, **common, lease_expires_at=now + data["lease_seconds"])
    if event == "progress":
        return replace(task, **common, progress=data["fraction"], progress_message=data.get("message"))
    if event == "complete":
        return replace(task, **common, **_NO_LEASE, result=data.get("result"), error=None, finished_at=now,
                       progress=1.0)
    if event == "fail_retry":
        return replace(task, **common, **_NO_LEASE, error=data["error"], not_before=now + data["delay"])
    if event in ("fail_final", "exhausted"):
        return replace(task, **common, **_NO_LEASE, error=data.get("error", task.error), finished_at=now)
    if event == "expire":
        return replace(task, **common, **_NO_LEASE, not_before=now + data.get("delay", 0.0),
                       error={"code": "lease_expired", "message": f"lease of {task.lease_holder} expired"})
    if event == "release":
        return replace(task, **common, **_NO_LEASE, attempts=max(0, task.attempts - 1))
    if event == "suspend":
        answered = task.responses
        requests = {k: v for k, v in dict(data["requests"]).items() if k not in answered}
        if not requests:
            raise InvalidTransition(f"task {task.id}: suspended without an unanswered input request")
        return replace(task, **common, **_NO_LEASE, attempts=max(0, task.attempts - 1),
                       input={"requests": requests, "responses": answered})
    if event == "cancel":
        if new_state is TaskState.CANCELLED:
            why = "cancelled while waiting for input" if task.state is W else "cancelled before it ran"
            return replace(task, **common, finished_at=now, cancel_requested=True,
                           error={"code": "cancelled", "message": why})
        return replace(task, **common, cancel_requested=True)
    if event == "cancelled":
        return replace(task, **common, **_NO_LEASE, finished_at=now,
                       error={"code": "cancelled", "message": "cancelled while running"})
    raise AssertionError(event)  # pragma: no cover - the table and this function agree


def _provide(task: Task, responses: dict[str, Any], *, now: float) -> Task:
    """Answers for a WAITING task: keys not outstanding are ignored; queued again once none is left."""
    pending = task.pending_requests
    answered = {k: v for k, v in responses.items() if k in pending}
    if not answered:
        return task
    still = {k: v for k, v in pending.items() if k not in answered}
    state = TaskState.WAITING if still else TaskState.QUEUED
    return replace(task, state=state, updated_at=now, version=task.version + 1, not_before=now,
                   input={"requests": still, "responses": {**task.responses, **answered}})


def fail(task: Task, *, now: float, token: str, error: dict[str, Any], retry: bool, backoff: Backoff) -> Task:
    """What a failed attempt becomes: failed for good (``retry=False``), queued again after a backoff,
    or dead-lettered when no attempt is left."""
    if not retry:
        return transition(task, "fail_final", now=now, token=token, error=error)
    if attempts_left(task):
        delay = backoff.delay(task.attempts)
        return transition(task, "fail_retry", now=now, token=token, error=error, delay=delay)
    return transition(task, "exhausted", now=now, token=token, error=error)


def expire(task: Task, *, now: float, backoff: Backoff) -> Task:
    """What an expired lease becomes: queued again, cancelled (if asked), or dead-lettered."""
    if task.cancel_requested:
        return transition(task, "cancelled", now=now, by_queue=True)
    if attempts_left(task):
        return transition(task, "expire", now=now, delay=backoff.delay(task.attempts))
    error = {"code": "lease_expired", "message": f"lease expired on the last attempt ({task.attempts})"}
    return transition(task, "exhausted", now=now, by_queue=True, error=error)
