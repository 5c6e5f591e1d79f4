"""Fixtures the suite uses to probe the protocol rather than a feature.

- ``server-stateless`` (2026-07-28): ``test_missing_capability`` (needs sampling, so a client that
  did not declare it gets -32021), ``test_logging_tool`` (logs, which must not reach a client that
  set no log level), ``test_streaming_elicitation`` (asks for input: an ``input_required`` result,
  never a server-to-client request), and the two triggers ``test_trigger_tool_change`` and
  ``test_trigger_prompt_change`` that change the tool and prompt lists through the registry, so
  ``list_changed`` notifications reach the listen streams.
- ``server-sse-polling`` (2025-11-25): ``test_reconnection`` logs, then closes its response stream
  mid-call (``ctx.close_stream``: SSE polling); the client resumes with ``Last-Event-ID`` after the
  priming event's ``retry`` and gets the result there.
- ``http-custom-header-server-validation`` (2026-07-28): ``test_custom_header`` has a string
  argument mirrored in the ``Mcp-Param-Region`` header (``x-mcp-header``).
"""

from __future__ import annotations

from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.conformance.common import Fixture, NoArguments, text_result
from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolDef, ToolResult

__all__ = ["DYNAMIC_PROMPT", "DYNAMIC_TOOL", "HeaderArguments", "ListChanges", "register"]

DYNAMIC_TOOL = "test_dynamic_tool"
DYNAMIC_PROMPT = "test_dynamic_prompt"


class HeaderArguments(BaseModel):
    region: str = Field(description="A region, mirrored in the Mcp-Param-Region header",
                        json_schema_extra={"x-mcp-header": "Region"})


async def missing_capability(args: NoArguments, ctx: ToolContext) -> ToolResult:
    answer = await ctx.sample([{"role": "user", "content": {"type": "text", "text": "Say hello."}}], max_tokens=20)
    return text_result(f"The client's model answered: {answer.get('content')}")


async def logging_tool(args: NoArguments, ctx: ToolContext) -> ToolResult:
    for level in ("debug", "info", "warning", "error"):
        await ctx.log(level, f"a {level} message from test_logging_tool", logger="conformance")
    return text_result("Logged one message at each of debug, info, warning and error")


async def streaming_elicitation(args: NoArguments, ctx: ToolContext) -> ToolResult:
    await ctx.report_progress(1, 2, "about to ask the user")
    answer = await ctx.elicit("Please confirm to continue.", {
        "type": "object", "properties": {"confirmed": {"type": "boolean", "description": "Continue?"}}})
    return text_result(f"The user answered: action={answer.get('action')}")


async def reconnection(args: NoArguments, ctx: ToolContext) -> ToolResult:
    await ctx.log("info", "test_reconnection started")
    # SSE polling: let the client go now; it comes back with Last-Event-ID for the rest.
    await ctx.close_stream()
    await trio.sleep(0.1)
    return text_result("Reconnection test completed")


async def custom_header(args: HeaderArguments, ctx: ToolContext) -> ToolResult:
    return text_result(f"region={args.region}")


async def dynamic_tool(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return text_result("A tool that test_trigger_tool_change adds and removes")


async def dynamic_prompt(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content.text("A prompt that test_trigger_prompt_change adds and removes")}]


class ListChanges:
    """The trigger tools: each call adds its dynamic tool or prompt when absent, removes it otherwise."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def toggle_tool(self, args: NoArguments, ctx: ToolContext) -> ToolResult:
        if self.registry.get_tool(DYNAMIC_TOOL) is None:
            self.registry.add_tool(ToolDef(name=DYNAMIC_TOOL, description="Added by test_trigger_tool_change.",
                                           fn=dynamic_tool, input_model=NoArguments, output_model=None,
                                           structured=False))
            return text_result(f"added {DYNAMIC_TOOL}")
        self.registry.remove_tool(DYNAMIC_TOOL)
        return text_result(f"removed {DYNAMIC_TOOL}")

    async def toggle_prompt(self, args: NoArguments, ctx: ToolContext) -> ToolResult:
        if self.registry.get_prompt(DYNAMIC_PROMPT) is None:
            self.registry.prompt(DYNAMIC_PROMPT, description="Added by test_trigger_prompt_change.")(dynamic_prompt)
            return text_result(f"added {DYNAMIC_PROMPT}")
        self.registry.remove_prompt(DYNAMIC_PROMPT)
        return text_result(f"removed {DYNAMIC_PROMPT}")


def register(registry: Registry) -> None:
    """Add the diagnostic fixtures."""
    changes = ListChanges(registry)
    fixtures: list[tuple[str, str, Fixture, type[BaseModel]]] = [
        ("test_missing_capability", "Needs the client's sampling capability.", missing_capability, NoArguments),
        ("test_logging_tool", "Sends log messages at four levels.", logging_tool, NoArguments),
        ("test_streaming_elicitation", "Reports progress, then asks the user to confirm.", streaming_elicitation,
         NoArguments),
        ("test_reconnection", "Sends a log message, waits 100 ms, then answers.", reconnection, NoArguments),
        ("test_custom_header", "Echoes its region argument (an x-mcp-header argument).", custom_header,
         HeaderArguments),
        ("test_trigger_tool_change", f"Adds {DYNAMIC_TOOL}, or removes it when present.", changes.toggle_tool,
         NoArguments),
        ("test_trigger_prompt_change", f"Adds the prompt {DYNAMIC_PROMPT}, or removes it when present.",
         changes.toggle_prompt, NoArguments),
    ]
    for name, description, fn, model in fixtures:
        registry.tool(name, description=description, structured=False, input_model=model)(fn)
