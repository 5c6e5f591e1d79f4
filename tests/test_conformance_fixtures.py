"""The conformance suite's fixtures: served only when ``mcp.conformance_fixtures`` is on.

The app is built in-process (no lifespan, no sockets) and its engine is driven directly; the suite
itself runs against a real node in ``make conformance``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_settings
from tests.mcp.helpers import MODERN, Recorder, check_result, modern, run_sync
from triomcp.conformance import diagnostics
from triomcp.conformance import resources as resource_fixtures
from triomcp.conformance import tools as tool_fixtures
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, Reply
from triomcp.server.app import create_app
from triomcp.testing import McpError, McpTestClient

LEGACY = "2025-11-25"
SUITE_TOOLS = {
    "test_simple_text", "test_image_content", "test_audio_content", "test_embedded_resource",
    "test_multiple_content_types", "test_error_handling", "test_tool_with_logging", "test_tool_with_progress",
    "test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool", "test_missing_capability", "test_logging_tool", "test_streaming_elicitation",
    "test_reconnection", "test_custom_header", "test_trigger_tool_change", "test_trigger_prompt_change",
}
SUITE_PROMPTS = {"test_simple_prompt", "test_prompt_with_arguments", "test_prompt_with_embedded_resource",
                 "test_prompt_with_image"}


def engine_of(tmp_path: Path, **mcp: Any) -> Engine:
    app = create_app(make_settings(tmp_path, mcp=mcp), configure=None)
    engine: Engine = app.state.services.engine
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return engine_of(tmp_path, conformance_fixtures=True)


def result_of(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply, Reply) and reply.status == 200, reply
    result: dict[str, Any] = reply.body["result"]
    return result


async def call(engine: Engine, outcome: Call | Reply, outbound: Recorder | None = None) -> dict[str, Any]:
    assert isinstance(outcome, Call), outcome
    with trio.fail_after(5):
        response = await outcome.run(outbound or Recorder())
    assert response is not None
    return response


def test_fixtures_are_not_served_by_default(tmp_path: Path) -> None:
    registry = engine_of(tmp_path).registry
    assert not [t.name for t in registry.tools() if t.name.startswith("test_") or t.name in SUITE_TOOLS]
    assert not [r.uri for r in registry.resources() if r.uri.startswith("test://")]
    assert not [t.uri_template for t in registry.templates() if t.uri_template.startswith("test://")]
    assert not [p.name for p in registry.prompts() if p.name.startswith("test_")]
    assert registry.completer("ref/prompt", "test_prompt_with_arguments", "arg1") is None


def test_every_fixture_the_suite_calls_is_listed(engine: Engine) -> None:
    tools = result_of(modern(engine, "tools/list"))
    check_result("tools/list", MODERN, tools)
    assert {t["name"] for t in tools["tools"]} >= SUITE_TOOLS
    prompts = result_of(modern(engine, "prompts/list"))
    assert {p["name"] for p in prompts["prompts"]} >= SUITE_PROMPTS
    assert all(p.get("description") for p in prompts["prompts"])
    resources = result_of(modern(engine, "resources/list"))
    assert {"test://static-text", "test://static-binary"} <= {r["uri"] for r in resources["resources"]}
    templates = result_of(modern(engine, "resources/templates/list"))
    assert resource_fixtures.TEMPLATE_URI in [t["uriTemplate"] for t in templates["resourceTemplates"]]


def test_the_2020_12_schema_is_served_verbatim_and_enforced(engine: Engine) -> None:
    tools = {t["name"]: t for t in result_of(modern(engine, "tools/list"))["tools"]}
    assert tools[tool_fixtures.SCHEMA_2020_12_TOOL]["inputSchema"] == tool_fixtures.JSON_SCHEMA_2020_12
    assert tools["test_custom_header"]["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"

    phone_only = {"contactMethod": "phone", "phone": "555"}
    ok = run_sync(modern(engine, "tools/call", {"name": tool_fixtures.SCHEMA_2020_12_TOOL, "arguments": phone_only}))
    assert ok is not None and ok["result"]["isError"] is False
    for wrong in ({"contactMethod": "phone", "email": "a@b"}, {"name": "x"}, {"email": "a@b", "extra": 1}):
        bad = run_sync(modern(engine, "tools/call", {"name": tool_fixtures.SCHEMA_2020_12_TOOL, "arguments": wrong}))
        assert bad is not None and bad["result"]["isError"] is True, wrong


@pytest.mark.parametrize(
    ("tool", "types"),
    [
        ("test_simple_text", ["text"]),
        ("test_image_content", ["image"]),
        ("test_audio_content", ["audio"]),
        ("test_embedded_resource", ["resource"]),
        ("test_multiple_content_types", ["text", "image", "resource"]),
    ],
)
def test_content_tools_answer_exactly_their_blocks(engine: Engine, tool: str, types: list[str]) -> None:
    response = run_sync(modern(engine, "tools/call", {"name": tool, "arguments": {}}))
    assert response is not None
    result = response["result"]
    check_result("tools/call", MODERN, result)
    assert [block["type"] for block in result["content"]] == types
    assert result["isError"] is False
    if tool == "test_image_content":
        assert base64.b64decode(result["content"][0]["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    if tool == "test_audio_content":
        assert base64.b64decode(result["content"][0]["data"])[:4] == b"RIFF"


def test_error_tool_is_an_error_result(engine: Engine) -> None:
    response = run_sync(modern(engine, "tools/call", {"name": "test_error_handling", "arguments": {}}))
    assert response is not None and response["result"]["isError"] is True
    assert response["result"]["content"][0]["text"]


async def test_logging_tool_logs_three_times_in_a_legacy_session(engine: Engine,
                                                                  autojump_clock: trio.abc.Clock) -> None:
    async with McpTestClient(engine, era="legacy", version=LEGACY) as client:  # logging/setLevel debug
        await client.call_tool("test_tool_with_logging")
    assert [entry["data"] for entry in client.logs] == [
        "Tool execution started", "Tool processing data", "Tool execution completed"]


async def test_progress_tool_reports_0_50_100(engine: Engine, autojump_clock: trio.abc.Clock) -> None:
    async with McpTestClient(engine) as client:
        await client.call_tool("test_tool_with_progress")
    assert [(p["progress"], p["total"]) for p in client.progress] == [(0, 100), (50, 100), (100, 100)]


async def test_elicitation_fixtures_ask_with_the_suites_schemas(engine: Engine) -> None:
    jane = {"action": "accept", "content": {"name": "Jane"}}
    async with McpTestClient(engine, era="legacy", version=LEGACY, elicitation=lambda params: jane) as client:
        result = await client.call_tool("test_elicitation_sep1034_defaults")
    ((method, params),) = client.input_requests
    assert method == "elicitation/create"
    assert params["requestedSchema"] == tool_fixtures.DEFAULTS_SCHEMA
    assert result["content"][0]["text"] == 'Elicitation completed: action=accept, content={"name":"Jane"}'


async def test_missing_capability_is_32021_naming_sampling(engine: Engine) -> None:
    async with McpTestClient(engine) as client:  # declares no sampling
        with pytest.raises(McpError) as refused:
            await client.call_tool("test_missing_capability")
    assert refused.value.jsonrpc_code == -32021
    assert refused.value.data["requiredCapabilities"] == {"sampling": {}}


async def test_modern_logging_tool_sends_nothing_without_a_log_level(engine: Engine) -> None:
    async with McpTestClient(engine, log_level=None) as client:
        result = await client.call_tool("test_logging_tool")
    assert result["isError"] is False
    assert client.notifications == []


async def test_triggers_add_then_remove_and_notify(engine: Engine) -> None:
    registry = engine.registry
    changes: list[str] = []
    registry.on_change(changes.append)
    for present in (True, False):
        await call(engine, modern(engine, "tools/call", {"name": "test_trigger_tool_change", "arguments": {}}))
        await call(engine, modern(engine, "tools/call", {"name": "test_trigger_prompt_change", "arguments": {}}))
        assert (registry.get_tool(diagnostics.DYNAMIC_TOOL) is not None) is present
        assert (registry.get_prompt(diagnostics.DYNAMIC_PROMPT) is not None) is present
    assert changes == ["tools", "prompts", "tools", "prompts"]


async def test_resources_prompts_and_completions(engine: Engine) -> None:
    read = await call(engine, modern(engine, "resources/read", {"uri": "test://template/123/data"}))
    check_result("resources/read", MODERN, read["result"])
    assert read["result"]["contents"] == [{"uri": "test://template/123/data", "mimeType": "application/json",
                                           "text": '{"id":"123","templateTest":true,"data":"Data for ID: 123"}'}]
    prompt = await call(engine, modern(engine, "prompts/get", {
        "name": "test_prompt_with_arguments", "arguments": {"arg1": "hello", "arg2": "world"}}))
    check_result("prompts/get", MODERN, prompt["result"])
    assert prompt["result"]["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='hello', arg2='world'"
    completion = await call(engine, modern(engine, "completion/complete", {
        "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
        "argument": {"name": "arg1", "value": "par"}}))
    assert completion["result"]["completion"]["values"] == ["paris", "park", "party"]
