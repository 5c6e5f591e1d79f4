"""P2P tools: status, peers, dialing, pinging, calling a tool on a peer."""

from __future__ import annotations

import json
from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.errors import RemoteError, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolResult
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.services import Services

__all__ = ["register"]

PEER_ID = Field(description="base58 peer id, e.g. 12D3KooW...", min_length=10, max_length=128)


class NoArguments(BaseModel):
    pass


class Status(BaseModel):
    peer_id: str
    listen_addrs: list[str]
    connected_peers: list[str]
    queue: dict[str, Any] | None = Field(description="task queue statistics, when the queue runs here")


class Peers(BaseModel):
    peers: list[dict[str, Any]]


class ConnectArgs(BaseModel):
    multiaddr: str = Field(description="full multiaddr ending in /p2p/<peer id>", max_length=1024)


class Connected(BaseModel):
    peer_id: str


class PingArgs(BaseModel):
    peer: str = PEER_ID


class Pong(BaseModel):
    peer: str
    rtt_ms: float


class CallArgs(BaseModel):
    peer: str = PEER_ID
    tool: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    arguments: dict[str, Any] = Field(default_factory=dict)


def _status(services: Services) -> Status:
    node = services.require_node()
    queue = services.queue.statistics() if services.queue is not None else None
    return Status(
        peer_id=node.peer_id,
        listen_addrs=node.listen_addrs(),
        connected_peers=node.connected_peers(),
        queue=None if queue is None else {
            "by_state": queue.by_state, "submitted": queue.submitted, "lease_expiries": queue.lease_expiries,
            "retries": queue.retries, "dead_letters": queue.dead_letters},
    )


def register(registry: Registry) -> None:
    @registry.tool(description="This node's peer id, listen multiaddrs, connected peers and queue statistics.",
                   read_only=True, group="status")
    async def p2p_status(args: NoArguments, ctx: ToolContext) -> Status:
        return _status(ctx.app_state)

    @registry.tool(description="Peers this node knows, with addresses and whether they are connected and "
                   "authorized.", read_only=True, group="status")
    async def p2p_peers(args: NoArguments, ctx: ToolContext) -> Peers:
        return Peers(peers=ctx.app_state.require_node().known_peers())

    @registry.tool(description="Dial a peer by multiaddr (…/p2p/<peer id>).", group="p2p", open_world=True)
    async def p2p_connect(args: ConnectArgs, ctx: ToolContext) -> Connected:
        return Connected(peer_id=await ctx.app_state.require_node().connect(args.multiaddr))

    @registry.tool(description="Round-trip time to a peer over libp2p.", read_only=True, group="status",
                   open_world=True)
    async def p2p_ping(args: PingArgs, ctx: ToolContext) -> Pong:
        rtt = await ctx.app_state.require_node().ping(args.peer)
        return Pong(peer=args.peer, rtt_ms=round(rtt * 1000, 3))

    @registry.tool(description="Call an MCP tool on another peer and return its result (progress is relayed). "
                               "Offered as a durable task to clients that speak MCP tasks.",
                   group="p2p", open_world=True, task_support="optional")
    async def p2p_call_tool(args: CallArgs, ctx: ToolContext) -> ToolResult:
        services: Services = ctx.app_state
        node = services.require_node()

        async def relay(progress: float, total: float | None, message: str | None) -> None:
            await ctx.report_progress(progress, total, message)

        try:
            with trio.fail_after(services.settings.p2p.call_timeout):
                result = await call_peer_tool(node, args.peer, args.tool, args.arguments,
                                              on_behalf_of=ctx.principal or "local", on_progress=relay)
        except trio.TooSlowError:
            raise ToolError(f"{args.tool} on {args.peer} took longer than p2p.call_timeout "
                            f"({services.settings.p2p.call_timeout}s)", code="peer_timeout") from None
        except RemoteError as err:
            raise ToolError(str(err), code=err.code) from None
        return ToolResult(data={"peer": args.peer, "tool": args.tool, "is_error": bool(result.get("isError")),
                                "result": result.get("structuredContent")})

    @registry.resource("triomcp://peers", name="peers", description="Known peers of this node.",
                       mime_type="application/json")
    async def peers_resource(ctx: ToolContext) -> str:
        return json.dumps(ctx.app_state.require_node().known_peers(), indent=2)
