"""MCP tasks backed by the TaskQueue: every MCP task is a durable queue task of type ``mcp.tool_call``.

The task is committed to this node's SQLite queue before ``CreateTaskResult`` is sent; any
worker that can run the tool takes it (this node's, or an authorized peer's in mesh mode);
``tasks/cancel`` reaches the handler wherever it runs; the TTL is the task's ``expires_at``,
after which a finished task is pruned. Tasks are bound to the principal that created them.
"""

from __future__ import annotations

from typing import Any

import trio

from triomcp.errors import InvalidParams, TaskNotFound
from triomcp.mcp.tasks import TaskRecord, TaskStatus
from triomcp.server.services import Services
from triomcp.taskqueue import Task, TaskState

__all__ = ["MCP_TOOL_CALL", "QueueTaskBackend"]

MCP_TOOL_CALL = "mcp.tool_call"
DEFAULT_TTL_MS = 3_600_000
MAX_TTL_MS = 7 * 24 * 3_600_000
CANCEL_WAIT_SECONDS = 5.0
_STATUS: dict[TaskState, TaskStatus] = {
    TaskState.QUEUED: "working",
    TaskState.LEASED: "working",
    TaskState.WAITING: "input_required",
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "failed",
    TaskState.DEAD: "failed",
    TaskState.CANCELLED: "cancelled",
}


def record_of(task: Task) -> TaskRecord:
    status = _STATUS[task.state]
    message = None
    error = None
    if task.state is TaskState.QUEUED:
        message = "queued" if task.attempts == 0 else f"queued again after attempt {task.attempts}"
    elif task.state is TaskState.WAITING:
        message = "waiting for input: " + ", ".join(sorted(task.pending_requests))
    elif task.state is TaskState.LEASED:
        message = task.progress_message or f"running on {task.lease_holder}"
        if task.cancel_requested:
            message = "cancellation requested"
    elif status == "failed":
        err = task.error or {}
        data = err.get("data")
        passed = data.get("jsonrpc") if isinstance(data, dict) else None
        error = passed if isinstance(passed, dict) else None
        message = str(err.get("message") or "the task failed")
        if error is None:
            error = {"code": -32603, "message": message}
    ttl_ms = None if task.expires_at is None else round((task.expires_at - task.created_at) * 1000)
    return TaskRecord(task_id=task.id, status=status, created_at=task.created_at, updated_at=task.updated_at,
                      ttl_ms=ttl_ms, status_message=message,
                      result=task.result if status == "completed" else None, error=error,
                      input_requests=task.pending_requests if status == "input_required" else None)


class QueueTaskBackend:
    """The engine's :class:`~triomcp.mcp.tasks.TaskBackend` over this node's queue."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.sessions: dict[str, str] = {}
        """Task id -> the legacy session that created it (status notifications; not durable)."""

    def _queue(self) -> Any:
        return self.services.require_queue()

    async def create(self, *, tool: str, arguments: dict[str, Any], principal: str | None, ttl_ms: int | None,
                     session_id: str | None, client_capabilities: dict[str, Any],
                     input_responses: dict[str, Any]) -> TaskRecord:
        ttl = DEFAULT_TTL_MS if ttl_ms is None else max(1000, min(ttl_ms, MAX_TTL_MS))
        payload: dict[str, Any] = {"tool": tool, "arguments": arguments}
        if client_capabilities:
            payload["capabilities"] = client_capabilities  # what the handler may ask for (input_required)
        if input_responses:
            payload["responses"] = input_responses  # answers gathered before the task began (MRTR)
        # Submitted, and committed, before the answer goes out: tasks/get resolves at once.
        task = await self._queue().submit(MCP_TOOL_CALL, payload, submitter=principal, ttl_seconds=ttl / 1000)
        if session_id is not None:
            self.sessions[task.id] = session_id
        return record_of(task)

    async def _task(self, task_id: str, principal: str | None) -> Task:
        try:
            task: Task = await self._queue().get(task_id)
        except TaskNotFound:
            raise InvalidParams("Failed to retrieve task: Task not found") from None
        if task.type != MCP_TOOL_CALL or (principal is not None and task.submitter != principal):
            raise InvalidParams("Failed to retrieve task: Task not found")  # never reveal others' tasks
        return task

    async def get(self, task_id: str, principal: str | None) -> TaskRecord:
        return record_of(await self._task(task_id, principal))

    async def wait(self, task_id: str, principal: str | None) -> TaskRecord:
        await self._task(task_id, principal)
        return record_of(await self._queue().wait_finished(task_id))

    async def list(self, principal: str | None, cursor: str | None, limit: int) -> tuple[list[TaskRecord], str | None]:
        try:
            tasks, next_cursor = await self._queue().list_tasks(task_type=MCP_TOOL_CALL, submitter=principal,
                                                          cursor=cursor, limit=limit)
        except ValueError as exc:
            raise InvalidParams(f"Invalid cursor: {exc}") from None
        return [record_of(t) for t in tasks], next_cursor

    async def cancel(self, task_id: str, principal: str | None, *, wait: bool) -> TaskRecord:
        task = await self._task(task_id, principal)
        if task.finished:
            return record_of(task)
        task = await self._queue().cancel(task_id)
        if wait and not task.finished:
            # A running handler stops at its next checkpoint, wherever it runs; wait a little for it.
            with trio.move_on_after(CANCEL_WAIT_SECONDS):
                task = await self._queue().wait_finished(task_id)
        return record_of(task)

    async def update(self, task_id: str, principal: str | None, responses: dict[str, Any]) -> TaskRecord:
        await self._task(task_id, principal)
        return record_of(await self._queue().provide_input(task_id, responses))

    def changed(self, task: Task) -> None:
        """Queue listener: status notifications for MCP tasks."""
        if task.type != MCP_TOOL_CALL:
            return
        session_id = self.sessions.get(task.id)
        if task.finished:
            self.sessions.pop(task.id, None)
        self.services.engine.task_changed(record_of(task), session_id)
