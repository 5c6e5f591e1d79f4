"""The client half of MCP over libp2p: a modern-era ``tools/call`` to a peer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import LATEST_MODERN_VERSION

from triomcp.errors import RemoteError
from triomcp.logs import REQUEST_ID

__all__ = ["ON_BEHALF_OF_META_KEY", "REQUEST_ID_META_KEY", "PeerCaller", "call_peer_tool"]

ON_BEHALF_OF_META_KEY = "triomcp/onBehalfOf"
"""The caller of the node that forwards a request (tasks stay bound to who asked): its principal
there, ``peer:<id>|...`` for a peer, so it names every peer the request came through. The
receiving node checks those peers (:func:`triomcp.p2p.authz.forwarding_refusal`); a forwarding
node computes the value with :func:`triomcp.p2p.authz.on_behalf_of`."""
REQUEST_ID_META_KEY = "triomcp/requestId"
"""The id of the HTTP request that caused this peer call, so both nodes' logs name it."""


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
    request_id = REQUEST_ID.get()
    if request_id:
        meta[REQUEST_ID_META_KEY] = request_id

    async def on_notification(message: dict[str, Any]) -> None:
        if on_progress is not None and message.get("method") == "notifications/progress":
            p = message.get("params") or {}
            await on_progress(float(p.get("progress", 0)), p.get("total"), p.get("message"))

    result = await node.call(peer_id, "tools/call", {"name": tool, "arguments": arguments, "_meta": meta},
                             on_notification=on_notification)
    if not isinstance(result, dict) or "content" not in result:
        raise RemoteError(f"peer {peer_id} answered tools/call with a malformed result")
    return result
