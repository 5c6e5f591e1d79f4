"""MCP over libp2p, server and client halves, composed from the engine and the node.

Server half: :class:`PeerMcpHandler` is the ``FrameHandler`` the node runs for every
JSON-RPC frame a peer sends on ``/triomcp/mcp/1.0.0``: it is the same engine that serves
HTTP, in the modern era, with the peer id as the principal.

Client half: :func:`call_peer_tool` builds a modern-era ``tools/call`` for a peer
and returns its structured result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY

from triomcp.errors import MethodNotFound, RemoteError, ToolError
from triomcp.mcp import jsonrpc
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, Reply
from triomcp.mcp.versions import LATEST_MODERN_VERSION

__all__ = ["ON_BEHALF_OF_META_KEY", "PeerCaller", "PeerMcpHandler", "call_peer_tool", "peer_principal"]

log = logging.getLogger("triomcp.p2p.mcp")

ON_BEHALF_OF_META_KEY = "triomcp/onBehalfOf"
"""The caller of the node that forwards a request (tasks stay bound to who asked)."""


def peer_principal(peer_id: str, on_behalf_of: str | None = None) -> str:
    """The principal of a request that arrived from a peer."""
    return f"peer:{peer_id}" if not on_behalf_of else f"peer:{peer_id}|{on_behalf_of}"


class _FrameOutbound:
    def __init__(self, notify: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._notify = notify

    async def send(self, message: dict[str, Any]) -> None:
        await self._notify(message)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise ToolError(f"cannot send {method} to a peer: MCP over libp2p has no back channel",
                        code="no_back_channel")


class PeerMcpHandler:
    """``async (message, *, peer_id, notify) -> response | None`` for the node's MCP protocol."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def __call__(
        self,
        message: dict[str, Any],
        *,
        peer_id: str,
        notify: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any] | None:
        on_behalf_of = None
        params = message.get("params") if isinstance(message, dict) else None
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            value = params["_meta"].get(ON_BEHALF_OF_META_KEY)
            on_behalf_of = value if isinstance(value, str) and value else None
        outcome = self.engine.handle_frame(message, principal=peer_principal(peer_id, on_behalf_of))
        if isinstance(outcome, Reply):
            return outcome.body if isinstance(outcome.body, dict) else None
        if isinstance(outcome, Call):
            return await outcome.run(_FrameOutbound(notify))
        ident = message.get("id") if isinstance(message, dict) else None
        return jsonrpc.error_response(
            ident if isinstance(ident, (str, int)) else None,
            MethodNotFound("subscriptions/listen is not served over libp2p"),
        )


class PeerCaller(Protocol):
    """What :func:`call_peer_tool` needs from the node."""

    async def call(
        self,
        peer_id: str,
        method: str,
        params: dict[str, Any],
        *,
        on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any]: ...


async def call_peer_tool(
    node: PeerCaller,
    peer_id: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    on_behalf_of: str | None = None,
    on_progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Call ``tool`` on ``peer_id``; returns its ``CallToolResult`` (raises RemoteError on protocol errors)."""
    meta: dict[str, Any] = {
        PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
        CLIENT_CAPABILITIES_META_KEY: {},
    }
    if on_behalf_of:
        meta[ON_BEHALF_OF_META_KEY] = on_behalf_of

    async def on_notification(message: dict[str, Any]) -> None:
        if on_progress is not None and message.get("method") == "notifications/progress":
            p = message.get("params") or {}
            await on_progress(float(p.get("progress", 0)), p.get("total"), p.get("message"))

    result = await node.call(peer_id, "tools/call", {"name": tool, "arguments": arguments, "_meta": meta},
                             on_notification=on_notification)
    if not isinstance(result, dict) or "content" not in result:
        raise RemoteError(f"peer {peer_id} answered tools/call with a malformed result")
    return result
