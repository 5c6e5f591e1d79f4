"""The libp2p side of the command line: a short-lived node with the CLI identity.

It discovers and dials exactly as the server does (``triomcp.p2p.open_node`` and
``Node.connect``), and reaches the node of this data dir through its announce file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from triomcp.errors import ConfigError, RemoteError, ToolError
from triomcp.mcp.results import unwrap_tool_result
from triomcp.p2p import CLI_IDENTITY_FILE, Node, open_node, read_announce
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.settings import Settings

__all__ = ["cli_node", "resolve_target", "tool"]

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


@contextlib.asynccontextmanager
async def cli_node(settings: Settings) -> AsyncIterator[Node]:
    p2p = settings.p2p.model_copy(update={"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": False, "bootstrap": []})
    async with open_node(p2p, settings.data_dir, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
        yield node


async def resolve_target(node: Node, settings: Settings, target: str | None) -> str:
    """Dial ``target`` (a multiaddr, a peer id known to the local node, or None = the local node)."""
    if target and "/" in target:
        return await node.connect(target)
    announced = await trio.to_thread.run_sync(read_announce, settings.data_dir)
    if target is None:
        if announced is None:
            raise ConfigError(f"no node is announced in {settings.data_dir} (start `triomcp serve` or "
                              "`triomcp node` there, or pass a multiaddr)")
        for addr in announced["multiaddrs"]:
            try:
                return await node.connect(addr)
            except Exception as exc:
                last = exc
        raise ConfigError(f"the local node announced in {settings.data_dir} is not reachable: {last}")
    if announced is not None and announced.get("peer_id") == target:
        return await resolve_target(node, settings, None)
    if node.is_connected(target):
        return target
    raise ConfigError(f"no address known for {target}: pass its full multiaddr (…/p2p/{target})")


async def tool(node: Node, peer: str, name: str, arguments: dict[str, Any], *,
               on_progress: ProgressFn | None = None) -> dict[str, Any]:
    """Call a tool on a peer and return its structured result (without ``ok``), raising ToolError
    with the tool's code on failure."""
    try:
        result = await call_peer_tool(node, peer, name, arguments, on_progress=on_progress)
    except RemoteError as err:
        raise ToolError(str(err), code=err.code) from None
    return unwrap_tool_result(result)
