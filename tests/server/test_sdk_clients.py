"""End to end: real Hypercorn on 127.0.0.1:0, the official MCP Python SDK client, both eras."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
import trio
from mcp.client import Client

from tests.toolkit import CANCELLED, CANCELLED_EVENTS, STARTED

MODES = ["legacy", "auto"]  # auto = the modern 2026-07-28 envelope


@pytest.mark.parametrize("mode", MODES)
async def test_list_and_call_tools(server: str, mode: str) -> None:
    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert {"server_status", "echo", "progress"} <= names
            result = await client.call_tool("echo", {"text": "héllo"})
            assert result.is_error is False
            assert result.structured_content == {"ok": True, "text": "héllo"}
            status = await client.call_tool("server_status", {})
            assert status.structured_content is not None
            assert status.structured_content["ok"] is True
            assert "2026-07-28" in status.structured_content["eras"]["modern"]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_the_client(server: str, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            result = await client.call_tool("progress", {"steps": 4}, progress_callback=on_progress)
    assert result.structured_content == {"ok": True, "steps": 4}
    assert [p for p, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][2] == "step 4"


@pytest.mark.parametrize("mode", MODES)
async def test_tool_errors_are_structured(server: str, mode: str) -> None:
    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            result = await client.call_tool("fail", {"text": "x"})
    assert result.is_error is True
    assert result.structured_content == {"ok": False, "error": {"code": "on_purpose", "message": "failed on purpose: x"}}


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_in_both_eras(server: str, mode: str) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})

    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode, elicitation_callback=elicit) as client:  # type: ignore[arg-type]
            result = await client.call_tool("confirm", {"text": "proceed?"})
    assert asked == ["proceed?"]
    assert result.structured_content == {"ok": True, "action": "accept", "content": {"ok": True}}


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_in_both_eras(server: str, mode: str) -> None:
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"),
                                         model="test-model")

    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode, sampling_callback=sample) as client:  # type: ignore[arg-type]
            result = await client.call_tool("ask_model", {"text": "meaning?"})
    assert result.structured_content == {"ok": True, "action": "sampled", "content": {"text": "42"}}


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts(server: str, mode: str) -> None:
    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            resources = await client.list_resources()
            assert [str(r.uri) for r in resources.resources if str(r.uri).startswith("test://")] == [
                "test://blob", "test://doc"]
            read = await client.read_resource("test://items/7")
            assert read.contents[0].text == "item 7"  # type: ignore[union-attr]
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_a_call_stops_the_handler(server: str, mode: str) -> None:
    tag = f"sdk-cancel-{mode}"
    STARTED[tag] = trio.Event()
    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "block", {"text": tag})
                await STARTED[tag].wait()
                nursery.cancel_scope.cancel()
            # The server notices (modern: the stream closed; legacy: notifications/cancelled).
            await CANCELLED_EVENTS.setdefault(tag, trio.Event()).wait()
            # the session keeps working afterwards
            again = await client.call_tool("echo", {"text": "after"})
            assert again.structured_content == {"ok": True, "text": "after"}
    assert tag in CANCELLED


@pytest.mark.parametrize("mode", MODES)
async def test_log_messages_reach_the_client(server: str, mode: str) -> None:
    received: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params.data)

    with trio.fail_after(20):
        async with Client(f"{server}/mcp", mode=mode, logging_callback=on_log,  # type: ignore[arg-type]
                          log_level="info") as client:
            await client.call_tool("progress", {"steps": 2})
    assert received == [{"step": 1}, {"step": 2}]
