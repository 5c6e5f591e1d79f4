"""Fixtures of the suite's ``input-required-result-*`` scenarios (modern era, multi round-trip requests).

A handler asks with ``ctx.elicit`` / ``ctx.sample`` / ``ctx.list_roots`` / ``ctx.ask``; the engine
answers ``resultType: "input_required"`` with the requests and a signed ``requestState`` that
carries the answers gathered so far, and runs the handler again when the client retries with
``inputResponses``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolResult

__all__ = ["register"]


def _schema(field: str, kind: str = "string") -> dict[str, Any]:
    return {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}


def _field(answer: dict[str, Any], name: str) -> Any:
    return (answer.get("content") or {}).get(name)


def _sampled_text(answer: dict[str, Any]) -> str:
    body = answer.get("content")
    if isinstance(body, list):
        body = body[0] if body else {}
    return str((body or {}).get("text", "")) if isinstance(body, dict) else ""


class NoArgs(BaseModel):
    pass


async def elicitation(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answer = await ctx.elicit("What is your name?", _schema("name"), key="user_name")
    return ToolResult(content=[content.text(f"Hello, {_field(answer, 'name')}!")])


async def sampling(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answer = await ctx.sample([{"role": "user", "content": {"type": "text", "text": "What is the capital of France?"}}],
                              max_tokens=100, key="capital_question")
    return ToolResult(content=[content.text(f"The model said: {_sampled_text(answer)}")])


async def list_roots(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answer = await ctx.list_roots(key="client_roots")
    roots = [str(r.get("uri")) for r in answer.get("roots") or [] if isinstance(r, dict)]
    return ToolResult(content=[content.text(f"The client has {len(roots)} root(s): {', '.join(roots)}")])


async def request_state(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answer = await ctx.elicit("Please confirm", _schema("ok", "boolean"), key="confirm")
    # The engine verified the requestState (signature, binding, age) before this handler ran again.
    verdict = "state-ok" if ctx.request_state_verified else "no requestState came back"
    return ToolResult(content=[content.text(f"{verdict}: confirmed={_field(answer, 'ok')}")])


async def multiple_inputs(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answers = await ctx.ask({
        "user_name": ctx.elicitation("What is your name?", _schema("name")),
        "greeting": ctx.sampling([{"role": "user", "content": {"type": "text", "text": "Generate a greeting"}}],
                                 max_tokens=50),
        "client_roots": ctx.roots(),
    })
    roots = len(answers["client_roots"].get("roots") or [])
    text = f"{_sampled_text(answers['greeting'])} {_field(answers['user_name'], 'name')} ({roots} root(s))"
    return ToolResult(content=[content.text(text)])


async def multi_round(args: NoArgs, ctx: ToolContext) -> ToolResult:
    name = await ctx.elicit("Step 1: What is your name?", _schema("name"), key="step1")
    color = await ctx.elicit("Step 2: What is your favorite color?", _schema("color"), key="step2")
    return ToolResult(content=[content.text(f"{_field(name, 'name')} likes {_field(color, 'color')}")])


async def tampered_state(args: NoArgs, ctx: ToolContext) -> ToolResult:
    answer = await ctx.elicit("Please confirm", _schema("ok", "boolean"), key="confirm")
    return ToolResult(content=[content.text(f"confirmed={_field(answer, 'ok')}")])


async def capabilities(args: NoArgs, ctx: ToolContext) -> ToolResult:
    """Asks only for what the client declared it can answer."""
    wanted: dict[str, dict[str, Any]] = {}
    if "elicitation" in ctx.client_capabilities:
        wanted["user_name"] = ctx.elicitation("What is your name?", _schema("name"))
    if "sampling" in ctx.client_capabilities:
        wanted["greeting"] = ctx.sampling([{"role": "user", "content": {"type": "text", "text": "Say hello"}}],
                                          max_tokens=50)
    if not wanted:
        return ToolResult(content=[content.text("the client can answer nothing; nothing asked")])
    answers = await ctx.ask(wanted)
    return ToolResult(content=[content.text(f"answered: {', '.join(sorted(answers))}")])


async def prompt(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    answer = await ctx.elicit("What context should the prompt use?", _schema("context"), key="user_context")
    return [{"role": "user", "content": {"type": "text", "text": f"Use this context: {_field(answer, 'context')}"}}]


TOOLS = {
    "test_input_required_result_elicitation": (elicitation, "Asks for a name, then greets."),
    "test_input_required_result_sampling": (sampling, "Asks the client's model a question."),
    "test_input_required_result_list_roots": (list_roots, "Asks for the client's roots."),
    "test_input_required_result_request_state": (request_state, "Checks the requestState of the retry."),
    "test_input_required_result_multiple_inputs": (multiple_inputs, "Asks three things in one round."),
    "test_input_required_result_multi_round": (multi_round, "Asks in two rounds."),
    "test_input_required_result_tampered_state": (tampered_state, "Refuses a tampered requestState."),
    "test_input_required_result_capabilities": (capabilities, "Asks only what the client can answer."),
}


def register(registry: Registry) -> None:
    for name, (fn, description) in TOOLS.items():
        registry.tool(name, description=description, structured=False)(fn)
    registry.prompt("test_input_required_result_prompt", description="A prompt that asks for its context first.")(
        prompt)
