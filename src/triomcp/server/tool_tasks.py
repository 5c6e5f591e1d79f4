"""The task types that run MCP tools: ``tool.call`` (the queue's own) and ``mcp.tool_call`` (MCP tasks).

A worker runs the registered tool through the engine, as the task's submitter, with the client
capabilities and the answers the task carries; progress becomes the task's progress; a handler that
asks its client for input parks the task (``NeedsInput``) until the answers come.
"""

from __future__ import annotations

from typing import Any

from triomcp.errors import ToolError
from triomcp.mcp import jsonrpc
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, Reply
from triomcp.mcp.results import modern_meta
from triomcp.taskqueue import Handler, NeedsInput, NonRetryable, Task, TaskContext

__all__ = ["TOOL_CALL", "make_tool_call_handler"]

TOOL_CALL = "tool.call"


class _TaskOutbound:
    """A task's run talks to no client: progress goes to the task, nothing else goes anywhere."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    async def send(self, note: dict[str, Any]) -> None:
        params = note.get("params") or {}
        total = params.get("total")
        if note.get("method") == "notifications/progress" and total:
            await self._ctx.report_progress(min(1.0, float(params["progress"]) / float(total)), params.get("message"))

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise ToolError("a task cannot ask its client for input", code="no_back_channel")

    async def close_stream(self) -> None:
        """A task has no response stream."""


def _call_message(task: Task, tool: str, payload: dict[str, Any]) -> dict[str, Any]:
    capabilities = payload.get("capabilities")
    earlier = payload.get("responses")
    params: dict[str, Any] = {"name": tool, "arguments": payload.get("arguments") or {},
                              "_meta": modern_meta(capabilities if isinstance(capabilities, dict) else {},
                                                   progressToken=task.id)}
    responses = {**(earlier if isinstance(earlier, dict) else {}), **task.responses}
    if responses:
        params["inputResponses"] = responses  # every answer so far: the handler runs again from the start
    return jsonrpc.request(1, "tools/call", params)


def make_tool_call_handler(engine: Engine, *, full_result: bool = False) -> Handler:
    """Run a registered MCP tool (payload ``{tool, arguments, capabilities?, responses?}``).

    With ``full_result`` (MCP tasks, ``mcp.tool_call``) the task's result is the whole
    ``CallToolResult``, an ``isError`` result included (the extension calls that *completed*), and
    a JSON-RPC error fails the task with that error. Without it, the result is the structured
    content and an ``isError`` result fails the task.
    """

    async def handle(task: Task, ctx: TaskContext) -> Any:
        payload = task.payload if isinstance(task.payload, dict) else {}
        tool = payload.get("tool")
        if not isinstance(tool, str) or engine.registry.get_tool(tool) is None:
            raise NonRetryable(f"{task.type}: no tool {tool!r} on this node",
                               data={"jsonrpc": {"code": -32602, "message": f"Unknown tool: {tool}"}})
        outcome = engine.handle_frame(_call_message(task, tool, payload), principal=task.submitter,
                                      executing_task=True)
        if isinstance(outcome, Reply):
            body = outcome.body if isinstance(outcome.body, dict) else {}
            raise NonRetryable(f"{task.type} refused: {body.get('error', body)}", data={"jsonrpc": body.get("error")})
        assert isinstance(outcome, Call)
        response = await outcome.run(_TaskOutbound(ctx))
        assert response is not None
        if "error" in response:
            raise NonRetryable(f"{task.type} {tool}: {response['error'].get('message')}",
                               data={"jsonrpc": response["error"]})
        result: dict[str, Any] = response["result"]
        if result.get("resultType") == "input_required":
            # The handler asked its client for input: the task waits (input_required) for tasks/update.
            raise NeedsInput(dict(result.get("inputRequests") or {}))
        if full_result:
            return {k: v for k, v in result.items() if k not in ("resultType", "_meta")}
        structured = result.get("structuredContent")
        if result.get("isError"):
            error = (structured or {}).get("error") or {}
            raise NonRetryable(f"{tool}: {error.get('message', 'failed')}", data={"code": error.get("code")})
        return structured

    return handle
