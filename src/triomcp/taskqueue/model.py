"""Immutable values of the task queue: tasks, leases, statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["FINISHED", "Lease", "QueueStatistics", "Task", "TaskState"]


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    WAITING = "waiting"
    """The handler needs input from outside (answers to ``input["requests"]``); not claimable until
    every request is answered (``provide_input``), then queued again with the answers."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    """Dead-letter: the attempts ran out."""


FINISHED = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DEAD})


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    type: str
    payload: Any
    priority: int
    seq: int
    """Submission order: FIFO among equal priorities."""
    state: TaskState
    submitter: str | None = None
    idempotency_key: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    """0 means unlimited."""
    not_before: float = 0.0
    """Earliest time a retry may be claimed (backoff)."""
    lease_holder: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    progress: float | None = None
    progress_message: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    version: int = 0
    """Bumped on every change (watchers wait for a version after the one they saw)."""
    expires_at: float | None = None
    """After this instant a finished task may be pruned (an MCP task's TTL); None: the queue's retention."""
    input: dict[str, Any] | None = None
    """Input the handler asked for while it ran: ``{"requests": {key: request}, "responses": {key: answer}}``.
    ``requests`` are the ones still unanswered (while WAITING); ``responses`` every answer so far, which
    the next attempt's handler gets (``TaskContext.responses``). Keys are unique over the task's life."""

    @property
    def responses(self) -> dict[str, Any]:
        """Every answer to the task's input requests so far."""
        found = (self.input or {}).get("responses")
        return dict(found) if isinstance(found, dict) else {}

    @property
    def pending_requests(self) -> dict[str, Any]:
        """The input requests still unanswered (a WAITING task's)."""
        found = (self.input or {}).get("requests")
        return dict(found) if isinstance(found, dict) else {}

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view without the lease token (a secret of the holder)."""
        out = asdict(self)
        out["state"] = self.state.value
        out.pop("lease_token", None)
        out.pop("seq", None)
        return out


@dataclass(frozen=True, slots=True)
class Lease:
    task: Task
    token: str
    expires_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.to_dict(), "token": self.token, "expires_at": self.expires_at}


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    by_state: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    lease_expiries: int = 0
    retries: int = 0
    dead_letters: int = 0
    database_jobs: int = 0
    """Trips to the database thread (:mod:`triomcp.taskqueue.database`)."""
    commits: int = 0
    """Transactions committed: one fsync each with ``synchronous=FULL``."""
    committed_changes: int = 0
    """Changes in those transactions (group commit: several per commit under load)."""
