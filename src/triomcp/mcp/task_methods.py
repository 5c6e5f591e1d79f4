"""The task methods of both eras, over the server's :class:`~triomcp.mcp.tasks.TaskBackend`.

Legacy (2025-11-25 tasks utility): ``tasks/get``, the blocking ``tasks/result``, ``tasks/list``,
``tasks/cancel``. Modern (the ``io.modelcontextprotocol/tasks`` extension): ``tasks/get``,
``tasks/update``, ``tasks/cancel``, each -32021 to a request that did not declare the extension.
A task is its creator's: another principal's request answers "Task not found".
"""

from __future__ import annotations

from typing import Any

from triomcp.errors import InvalidParams, TaskFailed
from triomcp.mcp.config import AsyncHandler
from triomcp.mcp.context import ToolContext
from triomcp.mcp.core import Core, Request
from triomcp.mcp.tasks import RELATED_TASK_META_KEY, TaskBackend, legacy_task, modern_task

__all__ = ["TaskMethods"]


def _task_id(req: Request) -> str:
    task_id = req.params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidParams("params.taskId must be a non-empty string")
    return task_id


class TaskMethods:
    def __init__(self, core: Core, backend: TaskBackend) -> None:
        self.core = core
        self.backend = backend

    def legacy(self) -> dict[str, AsyncHandler]:
        return {"tasks/get": self._legacy_get, "tasks/result": self._legacy_result,
                "tasks/list": self._legacy_list, "tasks/cancel": self._legacy_cancel}

    def modern(self) -> dict[str, AsyncHandler]:
        return {"tasks/get": self._modern_get, "tasks/update": self._modern_update, "tasks/cancel": self._modern_cancel}

    # -- legacy ----------------------------------------------------------------------------------
    async def _legacy_get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        return legacy_task(await self.backend.get(_task_id(req), req.principal))

    async def _legacy_result(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        task_id = _task_id(req)
        record = await self.backend.wait(task_id, req.principal)
        related = {RELATED_TASK_META_KEY: {"taskId": task_id}}
        if record.status == "completed" and record.result is not None:
            result = dict(record.result)
            result["_meta"] = {**(result.get("_meta") or {}), **related}
            return result
        if record.status == "failed" and record.error:
            raise TaskFailed(record.error, related)
        raise InvalidParams(f"task {task_id} was {record.status}; it has no result", data={"_meta": related})

    async def _legacy_list(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        cursor = req.params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidParams("params.cursor must be a string")
        records, next_cursor = await self.backend.list(req.principal, cursor, self.core.config.page_size)
        out: dict[str, Any] = {"tasks": [legacy_task(r) for r in records]}
        if next_cursor:
            out["nextCursor"] = next_cursor
        return out

    async def _legacy_cancel(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        task_id = _task_id(req)
        record = await self.backend.get(task_id, req.principal)
        if record.terminal:
            raise InvalidParams(f"Cannot cancel task: already in terminal status {record.status!r}")
        return legacy_task(await self.backend.cancel(task_id, req.principal, wait=True))

    # -- modern ----------------------------------------------------------------------------------
    async def _modern_get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        req.require_tasks_extension("tasks/get is a method of the tasks extension")
        return modern_task(await self.backend.get(_task_id(req), req.principal))

    async def _modern_update(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        """Answers to an ``input_required`` task's requests; keys not outstanding are ignored, and a
        partial answer keeps the task waiting for the rest. The ack comes before the task runs on."""
        req.require_tasks_extension("tasks/update is a method of the tasks extension")
        responses = req.params.get("inputResponses")
        if not isinstance(responses, dict):
            raise InvalidParams("params.inputResponses must be an object mapping request keys to results")
        await self.backend.update(_task_id(req), req.principal, responses)
        return {}

    async def _modern_cancel(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        """Cooperative and eventually consistent: the ack does not wait for the handler to stop."""
        req.require_tasks_extension("tasks/cancel is a method of the tasks extension")
        await self.backend.cancel(_task_id(req), req.principal, wait=False)
        return {}
