"""Where a task tool's call is served: here, or on the node holding the task it names, as the caller.

A task tool names a node by its ``peer`` argument, or by the owner tag its ``task_id`` starts
with (:mod:`triomcp._owner`). Outside a legacy session the HTTP relay has already sent such a
request to that node (:mod:`triomcp.mcp.routing`); inside one, every request goes to the session's
node, and the tool itself finds the owner (:func:`on_owner`):

- for a caller that is an HTTP client, the call goes to the owner through the relay, with the
  client's own credentials (:func:`triomcp.server.relay_call.call_tool`): the owner authenticates
  the client itself, so the client is the principal there that it is here, and reads back the
  tasks it submitted through any node, in either era;
- for a caller that is a peer over MCP over libp2p, or a task's run (no HTTP client to act for),
  a call that names ``peer`` goes there over MCP over libp2p for the forwarded principal
  (:func:`~triomcp.server.tools.forwarding.forward`), as before; a task id alone is looked up here.

The call made on the owner names it as ``peer``, so the owner serves it itself: a call goes at most
one hop further than the node the client's request reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from triomcp._owner import owner_tag, tag_of
from triomcp.errors import McpError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.results import unwrap_tool_result
from triomcp.mcp.routing import OwnerRoute
from triomcp.server.relay import Relay
from triomcp.server.relay_call import call_tool
from triomcp.server.services import services_of
from triomcp.server.tools.forwarding import forward, is_remote

__all__ = ["client_headers", "on_owner", "relayed", "serving_relay"]

Out = TypeVar("Out", bound=BaseModel)


def client_headers(ctx: ToolContext) -> Mapping[str, str] | None:
    """The headers of the HTTP request the call came in; None when it did not come over HTTP (a
    peer's call over MCP over libp2p, a task's run): no client to act for."""
    return ctx.http_headers


def serving_relay(ctx: ToolContext) -> tuple[Relay, Mapping[str, str]] | None:
    """The relay and the client's headers, when this call may be served elsewhere for its HTTP client."""
    relay, client = services_of(ctx).relay, client_headers(ctx)
    if relay is None or client is None or relay.node() is None:
        return None
    return relay, client


async def relayed(ctx: ToolContext, relay: Relay, client: Mapping[str, str], peer: str, tool: str,
                  arguments: dict[str, Any], *, runs_for: float = 0.0) -> dict[str, Any]:
    """``tool``'s structured result from ``peer``, called there for this call's client (as
    :func:`~triomcp.server.tools.forwarding.forward`'s is): its progress is this call's, its
    failure this call's (a ToolError with the tool's own code; the owner's JSON-RPC error as it came;
    :class:`~triomcp.errors.OwnerUnavailable` when it cannot be reached). The call gets
    ``p2p.call_timeout`` plus ``runs_for`` seconds (a wait's own timeout)."""
    node = relay.node()
    limit = (node.settings.call_timeout if node is not None else 0.0) + runs_for
    answer = await call_tool(relay, peer, client, tool, arguments, limit_s=limit, on_progress=ctx.report_progress)
    if isinstance(answer.get("error"), dict):
        raise McpError(answer["error"])
    result = answer.get("result")
    return unwrap_tool_result(result if isinstance(result, dict) else {}, where=f"on peer {peer}: ")


async def on_owner(ctx: ToolContext, tool: str, args: BaseModel, out: type[Out], *, task_id: str | None = None,
                   runs_for: float = 0.0) -> Out | None:
    """``tool``'s answer, as ``out``, from the node the call names (``args.peer``, else the owner tag
    of ``task_id``); None when that is this node, or the call names no node it can reach that way:
    the tool then runs here."""
    services = services_of(ctx)
    named: str | None = getattr(args, "peer", None)
    if named is not None and not is_remote(services, named):
        return None
    serving = serving_relay(ctx)
    if serving is not None:
        relay, client = serving
        tag = tag_of(task_id)
        route = OwnerRoute(owner_tag(named), peer=named) if named else OwnerRoute(tag) if tag else None
        owner = relay.owner(route) if route is not None else None
        if owner is not None:
            arguments = {**args.model_dump(mode="json", exclude_none=True), "peer": owner}
            return out(**await relayed(ctx, relay, client, owner, tool, arguments, runs_for=runs_for))
    if named is None:
        return None
    return out(**await forward(ctx, named, tool, args))
