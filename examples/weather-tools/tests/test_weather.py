"""The weather plugin, tested the three ways triomcp.testing offers: a tool function alone, the tools
over MCP on an in-process engine (both eras), and a whole node with its task queue (fixtures)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from triomcp.mcp import Registry
from triomcp.testing import McpError, McpTestClient, RecordingOutbound, make_tool_context

from weather_tools import City, Reading, forget_city, register, temperature


def confirm(params: dict[str, Any]) -> dict[str, Any]:
    """The user's side of the elicitation: yes."""
    assert params["requestedSchema"]["required"] == ["confirm"]
    return {"action": "accept", "content": {"confirm": True}}


# -- a tool function alone ------------------------------------------------------------------------------
async def test_temperature_reports_progress_then_logs() -> None:
    outbound = RecordingOutbound()
    reading = await temperature(City(city="Oslo"), make_tool_context(outbound=outbound))
    assert reading == Reading(city="Oslo", celsius=4.5)
    assert [(p["progress"], p["message"]) for p in outbound.progress] == [
        (0.5, "asking the station"), (1.0, "done")]
    assert outbound.logs == [{"level": "info", "data": {"city": "Oslo", "celsius": 4.5}}]


@pytest.mark.parametrize(("answer", "forgotten"), [
    ({"action": "accept", "content": {"confirm": True}}, True),
    ({"action": "accept", "content": {"confirm": False}}, False),
    ({"action": "decline"}, False),
])
async def test_forget_city_acts_only_once_confirmed(answer: dict[str, Any], forgotten: bool) -> None:
    outbound = RecordingOutbound(answers=[answer])
    result = await forget_city(City(city="Lima"), make_tool_context(outbound=outbound))
    assert result.forgotten is forgotten
    assert [method for method, _params in outbound.requests] == ["elicitation/create"]


# -- over MCP, on an in-process engine ---------------------------------------------------------------------
@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_the_tools_over_mcp(era: Literal["modern", "legacy"]) -> None:
    registry = Registry()
    register(registry)
    async with McpTestClient(registry, era=era, elicitation=confirm) as client:
        names = [tool["name"] for tool in await client.list_tools()]
        assert names == ["climate_report", "forget_city", "temperature"]
        result = await client.call_tool("temperature", {"city": "Lima"})
        assert result["structuredContent"] == {"ok": True, "city": "Lima", "celsius": 19.0}
        assert [p["message"] for p in client.progress] == ["asking the station", "done"]
        failed = await client.call_tool("temperature", {"city": "Atlantis"})
        assert failed["isError"] is True and failed["structuredContent"]["error"]["code"] == "unknown_city"
        forgot = await client.call_tool("forget_city", {"city": "Oslo"})
        assert forgot["structuredContent"] == {"ok": True, "city": "Oslo", "forgotten": True}
        assert [method for method, _params in client.input_requests] == ["elicitation/create"]
        with pytest.raises(McpError) as refused:
            await client.call_tool("rain", {})
        assert refused.value.jsonrpc_code == -32602


async def test_a_long_report_stops_when_its_call_is_cancelled() -> None:
    registry = Registry()
    register(registry)
    async with McpTestClient(registry) as client:
        with trio.CancelScope() as scope:
            # Cancel at the first progress note; the client returns once the handler has stopped.
            await client.call_tool("climate_report", {"city": "Oslo", "first_year": 1900, "last_year": 2100},
                                   on_notification=lambda message: scope.cancel())
        assert scope.cancelled_caught
        assert 1 <= len(client.progress) < 10  # of 201 years


# -- a whole node, with its task queue (the fixtures of triomcp.testing.plugin) ------------------------------
@pytest.mark.parametrize("mcp_era", ["modern", "legacy"])
async def test_the_report_runs_as_a_durable_task(mcp_client: McpTestClient) -> None:
    task = await mcp_client.call_tool_as_task("climate_report", {"city": "Cairo", "first_year": 2000,
                                                                 "last_year": 2004})
    assert task["status"] == "working"
    done = await mcp_client.wait_task(task["taskId"])
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"] == {
        "ok": True, "city": "Cairo", "years": 5, "mean_celsius": 31.06}


async def test_a_client_without_tasks_gets_the_report_directly(mcp_client: McpTestClient) -> None:
    result = await mcp_client.call_tool("climate_report", {
        "city": "Oslo", "first_year": 2001, "last_year": 2003})
    assert result["structuredContent"]["years"] == 3
    assert [p["message"] for p in mcp_client.progress] == ["year 2001", "year 2002", "year 2003"]


def test_the_entry_point_names_register() -> None:
    """What a node loads once the package is installed: ``weather = "weather_tools:register"``."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    module, _, name = pyproject["project"]["entry-points"]["triomcp.plugins"]["weather"].partition(":")
    assert getattr(importlib.import_module(module), name) is register
