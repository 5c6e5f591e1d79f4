"""MCP tasks, both eras, sans-I/O: the wire shapes and what the engine needs from a task store.

- Legacy (2025-11-25 tasks utility): the ``tasks`` capability, per-tool
  ``execution.taskSupport``, ``tools/call`` with ``task: {ttl}`` answering ``CreateTaskResult``,
  ``tasks/get``, the blocking ``tasks/result``, ``tasks/list``, ``tasks/cancel``,
  ``notifications/tasks/status`` and the related-task ``_meta``.
- Modern (2026-07-28 extension ``io.modelcontextprotocol/tasks``): advertised in
  ``server/discover``; a ``tools/call`` of a tool with task support (``optional`` or
  ``required``) answers ``resultType: "task"`` to a client that declared the extension (a
  ``required`` one is -32021 to the others); a task whose handler asks for input is
  ``input_required`` with its ``inputRequests`` until ``tasks/update`` answers them all;
  ``tasks/get``, ``tasks/update``, ``tasks/cancel``; ``notifications/tasks`` on
  ``subscriptions/listen``.

The store behind it (:class:`TaskBackend`) is the server's: a durable, distributed queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "RELATED_TASK_META_KEY",
    "TASKS_EXTENSION",
    "TaskBackend",
    "TaskRecord",
    "TaskStatus",
    "legacy_task",
    "modern_task",
]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"
POLL_INTERVAL_MS = 1000

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class TaskRecord:
    """One MCP task as the store sees it, era-neutral."""

    task_id: str
    status: TaskStatus
    created_at: float
    """Seconds since the epoch."""
    updated_at: float
    ttl_ms: int | None
    status_message: str | None = None
    result: dict[str, Any] | None = None
    """The ``CallToolResult`` once completed (``isError`` results are completed too)."""
    error: dict[str, Any] | None = None
    """The JSON-RPC error (``{code, message}``) once failed."""
    input_requests: dict[str, Any] | None = None
    """While ``input_required``: every request still unanswered, by key."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class TaskBackend(Protocol):
    """A durable task store. Every method sees only ``principal``'s tasks (others: ``TaskNotFound``)."""

    async def create(self, *, tool: str, arguments: dict[str, Any], principal: str | None, ttl_ms: int | None,
                     session_id: str | None, client_capabilities: dict[str, Any],
                     input_responses: dict[str, Any]) -> TaskRecord:
        """Durably store a task (a ``tasks/get`` resolves once this returns). ``client_capabilities``
        say what the task's handler may ask for; ``input_responses`` are answers it already has."""

    async def get(self, task_id: str, principal: str | None) -> TaskRecord: ...

    async def wait(self, task_id: str, principal: str | None) -> TaskRecord: ...

    async def list(self, principal: str | None, cursor: str | None, limit: int) -> tuple[list[TaskRecord], str | None]:
        ...

    async def cancel(self, task_id: str, principal: str | None, *, wait: bool) -> TaskRecord:
        """Ask the task to stop; ``wait``: give a running handler a moment to stop first."""

    async def update(self, task_id: str, principal: str | None, responses: dict[str, Any]) -> TaskRecord:
        """Answers to an ``input_required`` task's requests (others ignored)."""


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def legacy_task(record: TaskRecord) -> dict[str, Any]:
    """The 2025-11-25 ``Task``."""
    out: dict[str, Any] = {
        "taskId": record.task_id,
        "status": record.status,
        "createdAt": _iso(record.created_at),
        "lastUpdatedAt": _iso(record.updated_at),
        "ttl": record.ttl_ms,
        "pollInterval": POLL_INTERVAL_MS,
    }
    if record.status_message:
        out["statusMessage"] = record.status_message
    return out


def modern_task(record: TaskRecord) -> dict[str, Any]:
    """The extension's ``DetailedTask`` (result or error inlined once terminal)."""
    out: dict[str, Any] = {
        "taskId": record.task_id,
        "status": record.status,
        "createdAt": _iso(record.created_at),
        "lastUpdatedAt": _iso(record.updated_at),
        "ttlMs": record.ttl_ms,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if record.status_message:
        out["statusMessage"] = record.status_message
    if record.status == "input_required":
        out["inputRequests"] = dict(record.input_requests or {})
    if record.status == "completed" and record.result is not None:
        # The inlined CallToolResult is a modern result: it carries its resultType (never a related-task _meta).
        out["result"] = {**{k: v for k, v in record.result.items() if k != "_meta"}, "resultType": "complete"}
    if record.status == "failed":
        out["error"] = record.error or {"code": -32603, "message": record.status_message or "the task failed"}
    return out
