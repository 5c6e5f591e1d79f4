"""MCP over libp2p, server and client halves, composed from the engine and the node.

Server half: :class:`PeerMcpHandler` is the ``FrameHandler`` the node runs for every
JSON-RPC frame a peer sends on ``/triomcp/mcp/1.0.0``: it is the same engine that serves
HTTP, in the modern era, with the peer id as the principal. The stream has already refused
peers that are not authorized; a frame that acts on behalf of other peers (a forwarded one) is
checked here as well, by :func:`triomcp.p2p.authz.forwarding_refusal` (docs/security.md,
"Forwarding and delegation"). A peer's call takes a slot of the node's one admission budget
(:class:`~triomcp.server.admission.Admission`, shared with HTTP calls; the peer is its principal)
and past it is answered -32010 at once; a task's outcome tools are never refused.

The client half is :func:`triomcp.p2p.mcp_client.call_peer_tool`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from triomcp.errors import MethodNotFound, NotAuthorized, ToolError
from triomcp.logs import REQUEST_ID, valid_request_id
from triomcp.mcp import jsonrpc
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, Reply
from triomcp.p2p.authz import forwarding_refusal, peer_principal
from triomcp.p2p.mcp_client import ON_BEHALF_OF_META_KEY, REQUEST_ID_META_KEY
from triomcp.server.admission import NEVER_REFUSED, RETRY_AFTER_SECONDS, Admission, Refusal
from triomcp.server.seams import MeshNode

__all__ = ["PeerMcpHandler", "peer_principal"]

log = logging.getLogger("triomcp.p2p.mcp")


def _nobody(peer_id: str) -> bool:
    return False


class _FrameOutbound:
    def __init__(self, notify: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._notify = notify

    async def send(self, message: dict[str, Any]) -> None:
        await self._notify(message)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise ToolError(f"cannot send {method} to a peer: MCP over libp2p has no back channel",
                        code="no_back_channel")

    async def close_stream(self) -> None:
        """A libp2p stream carries many calls: nothing to end early."""


def _refused(ident: Any, refusal: Refusal) -> dict[str, Any]:
    """-32010 for a call refused by the node's admission control (the code HTTP's 503 carries)."""
    err = refusal.error(who="peer", retryAfter=RETRY_AFTER_SECONDS)  # no Retry-After header here: in the data
    return jsonrpc.error_response(ident if isinstance(ident, (str, int)) else None, err)


class PeerMcpHandler:
    """``async (message, *, peer_id, notify) -> response | None`` for the node's MCP protocol.

    ``node`` returns the node whose ``authorized_peers`` decides on forwarded frames (None while it
    is starting, or in a test without one: forwarded frames are then refused).
    """

    def __init__(self, engine: Engine, *, node: Callable[[], MeshNode | None] = lambda: None,
                 admission: Admission | None = None) -> None:
        self.engine = engine
        self._node = node
        self.admission = admission

    def refusal(self, peer_id: str, on_behalf_of: str | None) -> str | None:
        """Why a frame from ``peer_id`` acting for ``on_behalf_of`` may not be served; None if it may."""
        node = self._node()
        if node is None:
            if forwarding_refusal(peer_id, on_behalf_of, authorized=_nobody, delegate=_nobody) is None:
                return None
            return "not authorized: this node is starting and cannot check forwarded requests yet"
        allowed = node.authorized

        def authorized(peer: str) -> bool:
            return peer == node.peer_id or allowed.is_authorized(peer)  # itself, as a caller further back

        return forwarding_refusal(peer_id, on_behalf_of, authorized=authorized, delegate=allowed.is_delegate)

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
            request_id = params["_meta"].get(REQUEST_ID_META_KEY)
            if isinstance(request_id, str) and valid_request_id(request_id):
                # Each frame is served in its own task: setting the context here stays in that task.
                REQUEST_ID.set(request_id)
        ident = message.get("id") if isinstance(message, dict) else None
        refused = self.refusal(peer_id, on_behalf_of)
        if refused is not None:
            log.info("peer %s: refused %s: %s", peer_id[:16], message.get("method"), refused)
            if "id" not in message:
                return None
            return {"jsonrpc": "2.0", "id": ident if isinstance(ident, (str, int)) else None,
                    "error": {"code": NotAuthorized.jsonrpc_code, "message": refused}}
        outcome = self.engine.handle_frame(message, principal=peer_principal(peer_id, on_behalf_of))
        if isinstance(outcome, Reply):
            return outcome.body if isinstance(outcome.body, dict) else None
        if isinstance(outcome, Call):
            admission = self.admission
            if admission is None or outcome.tool in NEVER_REFUSED:
                return await outcome.run(_FrameOutbound(notify))
            principal = f"peer:{peer_id}"
            refusal = await admission.enter(principal)
            if refusal is not None:
                return _refused(ident, refusal)
            try:
                return await outcome.run(_FrameOutbound(notify))
            finally:
                admission.leave(principal)
        return jsonrpc.error_response(
            ident if isinstance(ident, (str, int)) else None,
            MethodNotFound("subscriptions/listen is not served over libp2p"),
        )
