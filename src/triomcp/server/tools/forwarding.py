"""Running a tool on another node: the same tool, over MCP over libp2p, for the same caller."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from triomcp.errors import RemoteError, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.services import Services

__all__ = ["forward", "is_remote"]


def is_remote(services: Services, peer: str | None) -> bool:
    return bool(peer) and (services.node is None or peer != services.node.peer_id)


async def forward(ctx: ToolContext, peer: str, tool: str, args: BaseModel, *, drop: tuple[str, ...] = ("peer",)) -> dict[str, Any]:
    """Call ``tool`` on ``peer`` with ``args`` (minus ``drop``); returns the peer's structured result.

    Progress from the peer is relayed to this call's client. A failure on the peer
    raises a ToolError with the peer's code, so the caller sees the same error shape.
    """
    services: Services = ctx.app_state
    node = services.require_node()
    arguments = args.model_dump(mode="json", exclude=set(drop), exclude_none=True)

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.report_progress(progress, total, message)

    try:
        result = await call_peer_tool(node, peer, tool, arguments, on_behalf_of=ctx.principal or "local",
                                      on_progress=relay)
    except RemoteError as err:
        raise ToolError(str(err), code=err.code) from None
    structured = result.get("structuredContent")
    if not isinstance(structured, dict):
        raise ToolError(f"peer {peer} answered {tool} without structured content", code="remote_error")
    if result.get("isError") or not structured.get("ok", False):
        error = structured.get("error") or {}
        raise ToolError(f"on peer {peer}: {error.get('message', 'failed')}", code=error.get("code", "remote_error"))
    return {k: v for k, v in structured.items() if k != "ok"}
