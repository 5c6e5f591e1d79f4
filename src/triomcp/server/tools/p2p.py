"""P2P tools: status, peers, dialing, pinging, calling a tool on a peer."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.errors import RemoteError, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolResult
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.services import services_of
from triomcp.server.tools.forwarding import acting_for
from triomcp.server.tools.toolset import BuiltinTool, add_tools

__all__ = ["TOOLS", "p2p_call_tool", "p2p_connect", "p2p_peers", "p2p_ping", "p2p_status", "peers_resource",
           "register"]

PEER_ID = Field(description="base58 peer id, e.g. 12D3KooW...", min_length=10, max_length=128)


class NoArguments(BaseModel):
    pass


class Status(BaseModel):
    peer_id: str
    listen_addrs: list[str]
    connected_peers: list[str]
    queue: dict[str, Any] | None = Field(description="task queue statistics, when the queue runs here")
    connections: dict[str, Any] | None = Field(default=None, description="connections kept (low and high water "
                                                                         "marks), trimmed, dialed on demand, "
                                                                         "opened in all; peer exchanges")
    mesh: dict[str, Any] | None = Field(default=None, description="the mesh scheduler's counters (announcements "
                                                                  "published and heard, claims, leases) and the "
                                                                  "work topic's gossip counters")
    relay: dict[str, Any] | None = Field(default=None, description="circuit relay: the relay service (reservations "
                                                                   "held here, refusals) and this node's reservations "
                                                                   "on its relays, with its relayed addresses")
    reachability: dict[str, Any] | None = Field(
        default=None, description="is this node publicly reachable: state (unknown, public or private, as its "
                                  "authorized peers dialing it back found), when last checked, where it was reached")


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


async def p2p_status(args: NoArguments, ctx: ToolContext) -> Status:
    services = services_of(ctx)
    node = services.require_node()
    queue = services.queue.statistics() if services.queue is not None else None
    scheduler = services.extras.get("mesh")
    mesh: dict[str, Any] | None = None
    if scheduler is not None:
        mesh = dataclasses.asdict(scheduler.statistics())
        gossip = getattr(node, "gossip", None)
        if gossip is not None:
            mesh["gossip"] = dataclasses.asdict(gossip.statistics())
    stats = node.statistics()
    relay = node.relay_status()
    return Status(
        connections={"connected": stats.connected_peers, "low": node.settings.connections_low,
                     "high": node.settings.connections_high, "trimmed": stats.connections_trimmed,
                     "on_demand_dials": stats.on_demand_dials, "opened": stats.connections_opened,
                     "exchanges": stats.exchanges},
        mesh=mesh,
        relay=relay,
        reachability=relay.pop("reachability", None),
        peer_id=node.peer_id,
        listen_addrs=node.listen_addrs(),
        connected_peers=node.connected_peers(),
        queue=None if queue is None else {
            "by_state": queue.by_state, "submitted": queue.submitted, "lease_expiries": queue.lease_expiries,
            "retries": queue.retries, "dead_letters": queue.dead_letters},
    )


async def p2p_peers(args: NoArguments, ctx: ToolContext) -> Peers:
    return Peers(peers=services_of(ctx).require_node().known_peers())


async def p2p_connect(args: ConnectArgs, ctx: ToolContext) -> Connected:
    return Connected(peer_id=await services_of(ctx).require_node().connect(args.multiaddr))


async def p2p_ping(args: PingArgs, ctx: ToolContext) -> Pong:
    rtt = await services_of(ctx).require_node().ping(args.peer)
    return Pong(peer=args.peer, rtt_ms=round(rtt * 1000, 3))


async def p2p_call_tool(args: CallArgs, ctx: ToolContext) -> ToolResult:
    services = services_of(ctx)
    node = services.require_node()
    timeout = services.settings.p2p.call_timeout

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.report_progress(progress, total, message)

    try:
        with trio.fail_after(timeout):
            result = await call_peer_tool(node, args.peer, args.tool, args.arguments,
                                          on_behalf_of=acting_for(ctx), on_progress=relay)
    except trio.TooSlowError:
        raise ToolError(f"{args.tool} on {args.peer} took longer than p2p.call_timeout ({timeout}s)",
                        code="peer_timeout") from None
    except RemoteError as err:
        raise ToolError(str(err), code=err.code) from None
    # The peer's result travels as data, a failed one included (is_error): the call itself worked.
    return ToolResult(data={"peer": args.peer, "tool": args.tool, "is_error": bool(result.get("isError")),
                            "result": result.get("structuredContent")})


async def peers_resource(ctx: ToolContext) -> str:
    return json.dumps(services_of(ctx).require_node().known_peers(), indent=2)


TOOLS = [
    BuiltinTool(p2p_status, "This node's peer id, listen multiaddrs, connected peers, reachability (unknown, "
                "public or private), relay reservations, hole punches and queue statistics.",
                group="status", read_only=True),
    BuiltinTool(p2p_peers, "Peers this node knows, with addresses, whether they are connected (each connection "
                "direct or relayed, and through which relay) and authorized.", group="status", read_only=True),
    BuiltinTool(p2p_connect, "Dial a peer by multiaddr (…/p2p/<peer id>).", group="p2p", open_world=True),
    BuiltinTool(p2p_ping, "Round-trip time to a peer over libp2p.", group="status", read_only=True,
                open_world=True),
    BuiltinTool(p2p_call_tool, "Call an MCP tool on another peer and return its result (progress is relayed). "
                "Offered as a durable task to clients that speak MCP tasks.", group="p2p", open_world=True,
                task_support="optional"),
]


def register(registry: Registry) -> None:
    add_tools(registry, TOOLS)
    registry.resource("triomcp://peers", name="peers", description="Known peers of this node.",
                      mime_type="application/json")(peers_resource)
