"""Running a tool on another node: the same tool, over MCP over libp2p, for the same caller.

The peer is told whom the call is for (:func:`acting_for`): the caller's principal, which names
every peer the request came through, so the peer can refuse one it never authorized (unless this
node is its delegate; docs/security.md, "Forwarding and delegation").
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from triomcp.errors import RemoteError, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.results import unwrap_tool_result
from triomcp.p2p.authz import on_behalf_of
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.services import Services, services_of

__all__ = ["acting_for", "forward", "is_remote", "on_peer"]

Out = TypeVar("Out", bound=BaseModel)


def acting_for(ctx: ToolContext) -> str:
    """The ``onBehalfOf`` of a call this node makes to a peer for ``ctx``'s caller: its principal (which
    names the peers it came through), or this node itself for its own CLI or HTTP front end."""
    node = services_of(ctx).node
    if node is None:
        return on_behalf_of(ctx.principal, is_local=lambda peer: False)
    return on_behalf_of(ctx.principal, is_local=node.authorized.is_local)


def is_remote(services: Services, peer: str | None) -> bool:
    return bool(peer) and (services.node is None or peer != services.node.peer_id)


async def on_peer(ctx: ToolContext, tool: str, args: BaseModel, out: type[Out]) -> Out | None:
    """``tool``'s answer, as ``out``, from the node that ``args.peer`` names; None when that is this
    node (or ``args`` names none), and the tool runs here."""
    peer: str | None = getattr(args, "peer", None)
    if peer is None or not is_remote(services_of(ctx), peer):
        return None
    return out(**await forward(ctx, peer, tool, args))


async def forward(ctx: ToolContext, peer: str, tool: str, args: BaseModel, *,
                  drop: tuple[str, ...] = ("peer",)) -> dict[str, Any]:
    """Call ``tool`` on ``peer`` with ``args`` (minus ``drop``); returns the peer's structured result.

    Progress from the peer is relayed to this call's client. A failure on the peer
    raises a ToolError with the peer's code, so the caller sees the same error shape.
    """
    node = services_of(ctx).require_node()
    arguments = args.model_dump(mode="json", exclude=set(drop), exclude_none=True)

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.report_progress(progress, total, message)

    try:
        result = await call_peer_tool(node, peer, tool, arguments, on_behalf_of=acting_for(ctx),
                                      on_progress=relay)
    except RemoteError as err:
        raise ToolError(str(err), code=err.code) from None
    return unwrap_tool_result(result, where=f"on peer {peer}: ")
