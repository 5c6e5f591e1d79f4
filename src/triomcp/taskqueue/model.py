"""Immutable values of the task queue: tasks, leases, statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["FINISHED", "Lease", "QueueStatistics", "Task", "TaskState"]


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
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
    by_type: dict[str, int] = field(default_factory=dict)
    """Unfinished tasks by type (backlog)."""
    submitted: int = 0
    lease_expiries: int = 0
    retries: int = 0
    dead_letters: int = 0
