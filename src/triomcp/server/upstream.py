"""``p2p.mode = "local-node"``: this HTTP server fronts a standalone ``triomcp node`` on the same machine.

The node owns the libp2p identity, the queue and the workers. This server runs a small libp2p
host of its own (identity ``identity-frontend.key`` in the shared data dir, which the node always
allows, like the CLI's), keeps it connected to the node over loopback, and forwards every
``tools/call`` and ``resources/read`` to it as MCP over libp2p: the same tools, the same results,
progress relayed, the caller's principal carried along (``onBehalfOf``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio

from triomcp._retry import Backoff
from triomcp.errors import ConfigError, PeerError, RemoteError, ToolError
from triomcp.logs import REQUEST_ID
from triomcp.mcp.context import ToolContext
from triomcp.mcp.results import modern_meta, strip_modern
from triomcp.p2p import FRONTEND_IDENTITY_FILE, Node, open_node, read_announce
from triomcp.p2p.discovery import keep_connected
from triomcp.p2p.mcp_client import ON_BEHALF_OF_META_KEY, REQUEST_ID_META_KEY, call_peer_tool
from triomcp.server.services import Services

__all__ = ["Upstream", "running_upstream"]

log = logging.getLogger("triomcp.upstream")


class Upstream:
    """The connection to the local node, and the forwarding functions the engine calls."""

    def __init__(self, node: Node, services: Services) -> None:
        self.node = node
        self.services = services
        self.peer_id: str | None = None
        self.connected = trio.Event()

    async def _target(self) -> str:
        configured = self.services.settings.p2p.local_node
        if configured:
            return configured
        announced = await trio.to_thread.run_sync(read_announce, self.services.settings.data_dir)
        if announced is None or not announced.get("multiaddrs"):
            raise ConfigError(f"no node announced in {self.services.settings.data_dir} yet")
        return str(announced["multiaddrs"][0])

    async def _connect(self, multiaddr: str) -> str:
        self.peer_id = await self.node.connect(multiaddr)
        self.connected.set()
        return self.peer_id

    async def keep_connected(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dial the node until connected, and again whenever the connection drops (with backoff:
        full jitter up to 0.4, 0.8 ... 5 s; the node may not have announced itself yet)."""
        task_status.started()
        await keep_connected(self._target, self._connect, self.node.is_connected, self.node.wait_peers_changed,
                             what="the local node", transient=(PeerError, ConfigError),
                             backoff=Backoff(base=0.4, cap=5.0), logger=log)

    def is_connected(self) -> bool:
        return self.peer_id is not None and self.node.is_connected(self.peer_id)

    def _peer(self) -> str:
        if self.peer_id is None or not self.node.is_connected(self.peer_id):
            raise ToolError("the local node (p2p.mode = local-node) is not connected; is `triomcp node` running "
                            f"with data dir {self.services.settings.data_dir}?", code="local_node_unavailable")
        return self.peer_id

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        async def relay(progress: float, total: float | None, message: str | None) -> None:
            await ctx.report_progress(progress, total, message)

        # No deadline of our own: the caller's request bounds the call (a closed stream cancels it).
        try:
            result = await call_peer_tool(self.node, self._peer(), name, arguments,
                                          on_behalf_of=ctx.principal or "local", on_progress=relay)
        except RemoteError as err:
            raise ToolError(f"the local node refused {name}: {err}", code=err.code) from None
        return strip_modern(result)

    async def read_resource(self, uri: str, principal: str | None) -> dict[str, Any]:
        meta = modern_meta()
        meta[ON_BEHALF_OF_META_KEY] = principal or "local"
        if REQUEST_ID.get():
            meta[REQUEST_ID_META_KEY] = REQUEST_ID.get()
        result = await self.node.call(self._peer(), "resources/read", {"uri": uri, "_meta": meta})
        return strip_modern(result)


class LocalNodeForwarder:
    """The engine's :class:`~triomcp.mcp.config.Forwarder` in ``local-node`` mode: every tool call and
    resource read goes to the local node, through the :class:`Upstream` while one is running."""

    def __init__(self) -> None:
        self.upstream: Upstream | None = None

    def _running(self) -> Upstream:
        if self.upstream is None:
            raise PeerError("the connection to the local node is not running (the server is starting or stopping)")
        return self.upstream

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return await self._running().call_tool(name, arguments, ctx)

    async def read_resource(self, uri: str, principal: str | None) -> dict[str, Any]:
        return await self._running().read_resource(uri, principal)


@contextlib.asynccontextmanager
async def running_upstream(services: Services) -> AsyncIterator[Upstream]:
    """A frontend host connected (and kept connected) to the local node; forwarding installed."""
    settings = services.settings
    p2p = settings.p2p.model_copy(update={"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": False, "bootstrap": []})
    async with open_node(p2p, settings.data_dir, identity_file=FRONTEND_IDENTITY_FILE, announce=False) as node:
        upstream = Upstream(node, services)
        forwarder: LocalNodeForwarder = services.extras["forwarder"]
        forwarder.upstream = upstream
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(upstream.keep_connected)
                yield upstream
                nursery.cancel_scope.cancel()
        finally:
            forwarder.upstream = None
