"""Fixtures of the suite's tasks scenarios (``tasks-*``, the ``io.modelcontextprotocol/tasks`` extension).

Each tool with task support runs as a durable queue task when the client declares the extension
(``optional``) or must (``required``): committed before ``CreateTaskResult`` is sent, run by any
worker that has the tool, cancelled through the queue.
"""

from __future__ import annotations

import trio
from pydantic import BaseModel, Field

from triomcp.errors import InternalError, ToolError
from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolResult

__all__ = ["register"]

CONFIRM_SCHEMA = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}
NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class GreetArgs(BaseModel):
    name: str = Field(description="who to greet")


class SlowArgs(BaseModel):
    seconds: float = Field(default=0, ge=0, le=3600, description="how long to work (0: at once)")
    label: str = Field(default="", max_length=200, description="echoed in the result")


class NoArgs(BaseModel):
    pass


class DeleteArgs(BaseModel):
    filename: str = Field(min_length=1, max_length=500, description="the file to (pretend to) delete")


async def greet(args: GreetArgs, ctx: ToolContext) -> ToolResult:
    """Sync only: never a task."""
    return ToolResult(content=[content.text(f"Hello, {args.name}!")])


async def slow_compute(args: SlowArgs, ctx: ToolContext) -> ToolResult:
    """Works ``seconds`` (a checkpoint: a cancel stops it), then answers."""
    await trio.sleep(args.seconds)
    return ToolResult(content=[content.text(f"computed {args.label or 'result'} after {args.seconds:g} s")])


async def failing_job(args: NoArgs, ctx: ToolContext) -> ToolResult:
    """A tool error after about a second: the task is ``completed`` with ``isError``."""
    await trio.sleep(1.0)
    raise ToolError("failing_job always fails", code="job_failed")


async def protocol_error_job(args: NoArgs, ctx: ToolContext) -> ToolResult:
    """A JSON-RPC error: the task is ``failed`` with that error."""
    raise InternalError("protocol_error_job raised a protocol error on purpose")


async def confirm_delete(args: DeleteArgs, ctx: ToolContext) -> ToolResult:
    """One elicitation inside the task (``input_required`` until ``tasks/update`` answers it)."""
    answer = await ctx.elicit(f"Delete {args.filename}?", CONFIRM_SCHEMA, key="confirm_delete")
    confirmed = answer.get("action") == "accept" and bool((answer.get("content") or {}).get("confirm"))
    verdict = "deleted" if confirmed else "kept"
    return ToolResult(content=[content.text(f"{args.filename} {verdict}")])


async def multi_input(args: NoArgs, ctx: ToolContext) -> ToolResult:
    """Two elicitations at once: both keys are pending together, and answered one at a time."""
    answers = await ctx.ask({
        "first": ctx.elicitation("First input?", NAME_SCHEMA),
        "second": ctx.elicitation("Second input?", NAME_SCHEMA),
    })
    names = [str((answers[k].get("content") or {}).get("name", "")) for k in ("first", "second")]
    return ToolResult(content=[content.text(f"got {names[0]} and {names[1]}")])


async def test_tool_with_task(args: NoArgs, ctx: ToolContext) -> ToolResult:
    """MRTR first (the name, over input-required results), then a task that uses the answer."""
    answer = await ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    await ctx.run_as_task()
    name = str((answer.get("content") or {}).get("name", "stranger"))
    return ToolResult(content=[content.text(f"Hello, {name}! (from a task)")])


def register(registry: Registry) -> None:
    registry.tool(description="Greets by name (sync only).", structured=False)(greet)
    registry.tool(description="Computes for `seconds` seconds; a task when the client supports tasks.",
                  structured=False, task_support="optional")(slow_compute)
    registry.tool(description="Always fails with a tool error after about a second (task required).",
                  structured=False, task_support="required")(failing_job)
    registry.tool(description="Always fails with a JSON-RPC error.", structured=False,
                  task_support="optional")(protocol_error_job)
    registry.tool(description="Asks for confirmation inside the task, then deletes (pretends to).",
                  structured=False, task_support="optional", destructive=True)(confirm_delete)
    registry.tool(description="Asks two questions at once inside the task.", structured=False,
                  task_support="optional")(multi_input)
    registry.tool(description="Asks for a name (MRTR), then continues as a task (task required).",
                  structured=False, task_support="required", task_start="handler")(test_tool_with_task)
