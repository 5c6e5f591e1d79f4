"""The engine behind MCP-over-libp2p frames (the node's transport is tested in tests/p2p)."""

from __future__ import annotations

from typing import Any

import trio
from pydantic import BaseModel

from tests.toolkit import register_test_tools
from triomcp.mcp.engine import Engine
from triomcp.mcp.registry import Registry
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.peer_mcp import PeerMcpHandler


class Nothing(BaseModel):
    pass


class Who(BaseModel):
    principal: str | None


def make_handler() -> PeerMcpHandler:
    registry = Registry()
    register_test_tools(registry)
    return PeerMcpHandler(Engine(registry))


class LoopbackNode:
    """A PeerCaller that hands frames straight to a handler (no libp2p)."""

    def __init__(self, handler: PeerMcpHandler) -> None:
        self.handler = handler
        self.frames: list[dict[str, Any]] = []

    async def call(self, peer_id: str, method: str, params: dict[str, Any], *, on_notification: Any = None) -> Any:
        params = {**params, "_meta": {**params["_meta"], "progressToken": 1}}
        message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        self.frames.append(message)

        async def notify(note: dict[str, Any]) -> None:
            if on_notification is not None:
                await on_notification(note)

        response = await self.handler(message, peer_id=peer_id, notify=notify)
        assert response is not None
        return response["result"]


async def test_peer_tool_call_round_trip_with_progress() -> None:
    node = LoopbackNode(make_handler())
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await call_peer_tool(node, "12D3KooWpeer", "progress", {"steps": 3}, on_progress=on_progress)
    assert result["structuredContent"] == {"ok": True, "steps": 3}
    assert seen == [1, 2, 3]


async def test_frames_without_meta_are_refused_and_notifications_get_nothing() -> None:
    handler = make_handler()

    async def notify(note: dict[str, Any]) -> None:
        raise AssertionError("nothing to notify")

    bad = await handler({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}, peer_id="p", notify=notify)
    assert bad is not None and bad["error"]["code"] == -32602 and bad["id"] == 3
    assert await handler({"jsonrpc": "2.0", "method": "notifications/cancelled"}, peer_id="p", notify=notify) is None
    junk = await handler({"nope": 1}, peer_id="p", notify=notify)  # type: ignore[arg-type]
    assert junk is not None and junk["error"]["code"] == -32600


async def test_tool_principal_is_the_peer() -> None:
    registry = Registry()

    @registry.tool(description="who is calling")
    async def whoami(args: Nothing, ctx: Any) -> Who:
        return Who(principal=ctx.principal)

    node = LoopbackNode(PeerMcpHandler(Engine(registry)))
    with trio.fail_after(5):
        result = await call_peer_tool(node, "12D3KooWabc", "whoami", {}, on_behalf_of="alice")
    assert result["structuredContent"]["principal"] == "peer:12D3KooWabc|alice"
