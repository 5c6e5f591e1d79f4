"""Tools: ``tools/list`` and ``tools/call``, including when a call becomes a task.

A call's outcome: the tool's result (``tool_success``), its failure as an ``isError`` result
(``tool_failure``: invalid arguments, a ``ToolError``, any other exception), an input-required
round (modern era), a protocol error (raised), or a ``CreateTaskResult`` (the call continues as a
durable task: at once, or when the handler awaits ``ctx.run_as_task()``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import ValidationError

from triomcp.errors import InvalidParams, MethodNotFound, ProtocolError, TriomcpError
from triomcp.mcp.config import AsyncHandler, SyncHandler
from triomcp.mcp.context import BecomeTask, InputRequired, ToolContext
from triomcp.mcp.core import Core, Request
from triomcp.mcp.headers import check_param_headers
from triomcp.mcp.inputs import input_required
from triomcp.mcp.lifecycle import validation_message
from triomcp.mcp.pagination import page
from triomcp.mcp.registry import ToolDef, ToolResult
from triomcp.mcp.results import tool_failure, tool_success
from triomcp.mcp.tasks import legacy_task, modern_task
from triomcp.mcp.versions import Era

__all__ = ["Tools"]

log = logging.getLogger("triomcp.mcp")


class Tools:
    def __init__(self, core: Core) -> None:
        self.core = core

    def handlers(self) -> tuple[dict[str, SyncHandler], dict[str, AsyncHandler]]:
        return {"tools/list": self._list}, {"tools/call": self._call}

    def _list(self, req: Request) -> dict[str, Any]:
        tools = [t.describe for t in self.core.registry.tools()]
        if self.core.tasks is None or req.era is Era.MODERN:
            # taskSupport is the legacy utility's; the extension lets the server decide per request.
            tools = [{k: v for k, v in t.items() if k != "execution"} if "execution" in t else t for t in tools]
        return page(tools, req.params.get("cursor"), size=self.core.config.page_size, key="tools")

    def _observe(self, name: str, req: Request, outcome: str, seconds: float) -> None:
        if self.core.hooks.observe_call is not None:
            self.core.hooks.observe_call(name, req.era.value, outcome, seconds)

    async def _call(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        name = req.params["name"]
        tool = self.core.registry.get_tool(name)
        if tool is None:
            raise InvalidParams(f"Unknown tool: {name}")
        arguments = req.params.get("arguments") or {}
        if req.era is Era.MODERN and tool.header_params:
            check_param_headers(tool.header_params, arguments, req.headers)
        try:
            args = tool.input_model.model_validate(arguments)
        except ValidationError as exc:
            self._observe(name, req, "invalid_arguments", 0.0)
            return tool_failure("invalid_arguments", f"Invalid arguments: {validation_message(exc)}",
                                structured=tool.structured)
        when = self._task_decision(req, tool)
        if when == "call":
            return await self._create_task(req, tool, arguments, {})
        ctx.may_become_task = when == "handler"
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            result, outcome = await self._run(req, tool, args, arguments, ctx)
            return result
        finally:
            self._observe(name, req, outcome, time.perf_counter() - started)

    async def _run(self, req: Request, tool: ToolDef, args: Any, arguments: dict[str, Any],
                   ctx: ToolContext) -> tuple[dict[str, Any], str]:
        """The handler's outcome and its name for metrics; a protocol error propagates."""
        forward = self.core.hooks.forward
        try:
            if forward is not None:
                forwarded = await forward.call_tool(tool.name, arguments, ctx)
                return forwarded, "error" if forwarded.get("isError") else "ok"
            output = await tool.fn(args, ctx)
        except BecomeTask as become:
            return await self._create_task(req, tool, arguments, become.answers), "task"
        except InputRequired as need:
            return input_required(self.core, req, need), "input_required"
        except ProtocolError:
            raise
        except TriomcpError as err:
            return tool_failure(err.code, err.message, err.data, structured=tool.structured), "error"
        except Exception as exc:
            log.exception("tool %s failed", tool.name)
            return tool_failure("internal_error", f"{type(exc).__name__}: {exc}", structured=tool.structured), "error"
        extra: list[dict[str, Any]] = []
        if isinstance(output, ToolResult):
            extra, output = list(output.content), output.data
        return tool_success(output, extra, structured=tool.structured), "ok"

    def _task_decision(self, req: Request, tool: ToolDef) -> Literal["call", "handler"] | None:
        """Whether this call becomes a task, and when (a protocol error when the two sides disagree).

        Legacy: when the request asks for one (``params.task``). Modern: the server decides; a tool
        with task support becomes a task for every client that declared the extension, and a tool
        that requires it is refused (-32021) to the others."""
        if req.executing_task or self.core.tasks is None:
            return None
        if req.era is Era.LEGACY:
            wanted = req.params.get("task") is not None
            if wanted and tool.task_support == "forbidden":
                raise MethodNotFound(f"tool {tool.name!r} does not support task execution (taskSupport: forbidden)")
            if not wanted and tool.task_support == "required":
                raise MethodNotFound(f"tool {tool.name!r} must be called as a task (taskSupport: required)")
            return tool.task_start if wanted else None
        if tool.task_support == "forbidden":
            return None
        if not req.declares_tasks:
            if tool.task_support == "required":
                req.require_tasks_extension(f"tool {tool.name!r} runs as a task")
            return None
        return tool.task_start

    async def _create_task(self, req: Request, tool: ToolDef, arguments: dict[str, Any],
                           answers: dict[str, Any]) -> dict[str, Any]:
        """Commit the call as a durable task (before answering) and answer ``CreateTaskResult``."""
        backend = self.core.tasks
        assert backend is not None
        ttl = (req.params.get("task") or {}).get("ttl") if req.era is Era.LEGACY else None
        record = await backend.create(
            tool=tool.name, arguments=arguments, principal=req.principal,
            ttl_ms=int(ttl) if isinstance(ttl, (int, float)) and ttl >= 0 else None,
            session_id=req.session.id if req.session else None,
            # A modern task may ask its client for input (tasks/update answers); a legacy one has no way to.
            client_capabilities=req.client_capabilities if req.era is Era.MODERN else {},
            input_responses=answers)
        if req.era is Era.LEGACY:
            return {"task": legacy_task(record)}
        return {**modern_task(record), "resultType": "task"}
