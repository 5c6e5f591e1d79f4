"""Tools, resources and prompts that exercise every engine feature (tests and benchmarks)."""

from __future__ import annotations

from typing import Any

import trio
import trio.lowlevel
from pydantic import BaseModel, Field

from triomcp.errors import ToolError
from triomcp.logs import REQUEST_ID
from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolResult

CANCELLED: list[str] = []
"""Names of calls whose handler saw cancellation (tests read it)."""
CANCELLED_EVENTS: dict[str, trio.Event] = {}
"""Set when the ``block`` call with that text is cancelled."""
STARTED: dict[str, trio.Event] = {}
GATES: dict[str, trio.Event] = {}
"""Events a test sets to let a ``gate`` call finish."""


class Text(BaseModel):
    text: str


class Steps(BaseModel):
    steps: int = Field(default=3, ge=1, le=100)


class Done(BaseModel):
    steps: int


class Key(BaseModel):
    key: str = Field(description="a label", json_schema_extra={"x-mcp-header": "Key"})
    region: str | None = Field(default=None, json_schema_extra={"x-mcp-header": "Region"})


class Nothing(BaseModel):
    pass


class Answer(BaseModel):
    action: str
    content: dict[str, Any] | None = None


class Caller(BaseModel):
    principal: str | None
    request_id: str | None


def register_test_tools(registry: Registry) -> None:
    @registry.tool(description="Echo the text back.", read_only=True)
    async def echo(args: Text, ctx: ToolContext) -> Text:
        return Text(text=args.text)

    @registry.tool(description="Report progress N times, then finish.")
    async def progress(args: Steps, ctx: ToolContext) -> Done:
        for i in range(args.steps):
            await ctx.report_progress(i + 1, args.steps, f"step {i + 1}")
            await ctx.log("info", {"step": i + 1})
            await trio.lowlevel.checkpoint()
        return Done(steps=args.steps)

    @registry.tool(description="Wait until cancelled (records the cancellation).", task_support="optional")
    async def block(args: Text, ctx: ToolContext) -> Text:
        STARTED.setdefault(args.text, trio.Event()).set()
        try:
            await trio.sleep_forever()
        finally:
            CANCELLED.append(args.text)
            CANCELLED_EVENTS.setdefault(args.text, trio.Event()).set()
        return args  # pragma: no cover

    @registry.tool(description="Report progress, wait for the test to open the gate, report again, finish.",
                   task_support="optional")
    async def gate(args: Text, ctx: ToolContext) -> Text:
        await ctx.report_progress(1, 2, "before the gate")
        STARTED.setdefault(args.text, trio.Event()).set()
        await GATES.setdefault(args.text, trio.Event()).wait()
        await ctx.report_progress(2, 2, "after the gate")
        return args

    @registry.tool(description="SSE polling: end the response stream at once, finish once the gate opens.")
    async def polled(args: Text, ctx: ToolContext) -> Text:
        await ctx.close_stream()
        STARTED.setdefault(args.text, trio.Event()).set()
        await GATES.setdefault(args.text, trio.Event()).wait()
        await ctx.report_progress(1, 1, "after the gate")
        return args

    @registry.tool(description="Sleep for some milliseconds, with a progress note first.")
    async def sleep_ms(args: Steps, ctx: ToolContext) -> Done:
        await ctx.report_progress(0.5, 1.0, "sleeping")
        await trio.sleep(args.steps / 1000)
        return Done(steps=args.steps)

    @registry.tool(description="A long job: always a task; waits for the test's gate.", task_support="required")
    async def job(args: Text, ctx: ToolContext) -> Text:
        await ctx.report_progress(1, 2, "job started")
        STARTED.setdefault(args.text, trio.Event()).set()
        try:
            await GATES.setdefault(args.text, trio.Event()).wait()
        except trio.Cancelled:
            CANCELLED.append(args.text)
            CANCELLED_EVENTS.setdefault(args.text, trio.Event()).set()
            raise
        return Text(text=f"done {args.text}")

    @registry.tool(description="Always fails with a ToolError.", task_support="optional")
    async def fail(args: Text, ctx: ToolContext) -> Text:
        raise ToolError(f"failed on purpose: {args.text}", code="on_purpose")

    @registry.tool(description="Crashes with an unexpected exception.")
    async def crash(args: Text, ctx: ToolContext) -> Text:
        raise RuntimeError("boom")

    @registry.tool(description="Ask the user to confirm.")
    async def confirm(args: Text, ctx: ToolContext) -> Answer:
        answer = await ctx.elicit(args.text, {"type": "object", "properties": {"ok": {"type": "boolean"}}})
        return Answer(action=answer["action"], content=answer.get("content"))

    @registry.tool(description="Ask the client's model.")
    async def ask_model(args: Text, ctx: ToolContext) -> Answer:
        answer = await ctx.sample([{"role": "user", "content": {"type": "text", "text": args.text}}], max_tokens=10)
        return Answer(action="sampled", content={"text": answer.get("content", {}).get("text")})

    @registry.tool(description="Return every kind of content.")
    async def media(args: Nothing, ctx: ToolContext) -> ToolResult:
        return ToolResult(
            data={"kinds": 5},
            content=[
                content.image(b"\x89PNG\r\n", "image/png"),
                content.audio(b"RIFF", "audio/wav"),
                content.embedded_resource("test://doc", text="hello", mime_type="text/plain"),
                content.resource_link("test://doc", "doc"),
            ],
        )

    @registry.tool(description="Who is asking, and under which request id.")
    async def whoami(args: Nothing, ctx: ToolContext) -> Caller:
        return Caller(principal=ctx.principal, request_id=REQUEST_ID.get())

    @registry.tool(description="Arguments mirrored as headers.")
    async def keyed(args: Key, ctx: ToolContext) -> Key:
        return args

    @registry.resource("test://doc", name="doc", description="A document.", mime_type="text/plain")
    async def doc(ctx: ToolContext) -> str:
        return "hello"

    @registry.resource("test://blob", name="blob", mime_type="application/octet-stream")
    async def blob(ctx: ToolContext) -> bytes:
        return b"\x00\x01\x02"

    @registry.resource_template("test://items/{item}", name="item", mime_type="text/plain")
    async def item(variables: dict[str, str], ctx: ToolContext) -> str:
        return f"item {variables['item']}"

    @registry.prompt("greet", description="Greet someone.", arguments=[("name", "who to greet", True)])
    async def greet(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
        return [{"role": "user", "content": {"type": "text", "text": f"Say hello to {arguments['name']}."}}]

    @registry.completion("ref/prompt", "greet", "name")
    async def complete_name(value: str, other: dict[str, str]) -> list[str]:
        return [n for n in ("alice", "albert", "bob") if n.startswith(value)]
