"""The libp2p node as the rest of triomcp sees it: ids, peers, dialing, pings and MCP calls.

A :class:`Node` wraps one running host (``host.py`` builds it, runs it and closes it, in
``open_node``). Rules it keeps (see docs/architecture.md):

- a deadline on every dial and stream open (a silent peer would hang 120 s);
- stream handlers never let an exception reach ``host.run()`` (it would tear the host down);
- one long-lived MCP stream per peer (:class:`~triomcp.p2p.rpc.PeerChannel`), requests multiplexed
  by id; each peer has one request budget across its streams and reconnections.

Beside it: ``rpc`` (MCP streams), ``exchange`` (peer exchange), ``http`` and ``http_serve`` (HTTP
over libp2p), ``discovery``, ``authz``.

Size: a little over 300 lines: the one facade of a running host (identity, peers, dialing, pings,
the MCP and HTTP streams), each operation a few lines over the modules beside it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import multiaddr as ma
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from triomcp._ratelimit import TokenBucket
from triomcp.errors import ConfigError, PeerError
from triomcp.p2p._errors import close_quietly, map_libp2p_errors
from triomcp.p2p.admission import InboundGate
from triomcp.p2p.authz import AuthorizedPeers
from triomcp.p2p.discovery import peer_id_in
from triomcp.p2p.exchange import PeerExchange
from triomcp.p2p.flow import batch_window_updates
from triomcp.p2p.http import HTTP_PROTOCOL, HttpStreams
from triomcp.p2p.identity import peer_id_of
from triomcp.p2p.peerstore import KnownPeers
from triomcp.p2p.rpc import MCP_PROTOCOL, FrameHandler, PeerChannel, serve_stream
from triomcp.settings import P2PSettings

__all__ = ["AUTHORIZED_FILE", "Node", "NodeStatistics"]

log = logging.getLogger("triomcp.p2p")

AUTHORIZED_FILE = "authorized_peers"
"""Who may call this node, in its data dir (``authz.py``)."""


@dataclass(frozen=True)
class NodeStatistics:
    peer_id: str
    connected_peers: int
    dial_failures: int
    frame_errors: int
    calls_served: int
    inbound_unauthenticated: int = 0
    """Inbound connections now between accept and authentication."""
    inbound_refused: int = 0
    """Inbound connections refused by ``p2p.max_unauthenticated_*`` since the node started."""


class Node:
    """What the rest of triomcp sees of libp2p: ids, peers, dialing, pings and MCP calls."""

    def __init__(
        self,
        host: IHost,
        key_pair: KeyPair,
        settings: P2PSettings,
        data_dir: Path,
        authorized: AuthorizedPeers,
        nursery: trio.Nursery,
        admission: InboundGate | None = None,
    ) -> None:
        self.host = host
        self.admission = admission
        """Counts and caps this host's inbound connections until they are authenticated."""
        self.settings = settings
        self.data_dir = data_dir
        self.authorized = authorized
        self.peer_id = peer_id_of(key_pair)
        self._nursery = nursery
        self._channels: dict[str, PeerChannel] = {}
        self._peers_changed = trio.Event()
        self._dial_failures = 0
        self._frame_errors = 0
        self._calls_served = 0
        self._budgets: dict[str, TokenBucket] = {}
        """Per-peer request budgets, kept across the peer's streams and reconnections."""
        self._closed = False
        self.frame_handler: FrameHandler | None = None
        self.known: KnownPeers | None = None
        """Peers remembered across restarts (nodes only; the CLI's short-lived host has none)."""
        self.exchange = PeerExchange(self)  # /triomcp/peers/1.0.0, both halves
        self.http = HttpStreams(self._open_http_stream, write_timeout=settings.stream_timeout)
        """HTTP requests to peers over ``/http/1.1`` (pooled streams)."""

    # -- identity and peers ---------------------------------------------------------------
    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return sorted(p.to_base58() for p in self.host.get_connected_peers())

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected_peers()

    def known_peers(self) -> list[dict[str, Any]]:
        """Every peer in the peerstore with its addresses (this node excluded)."""
        store = self.host.get_peerstore()
        out = []
        for pid in store.peer_ids():
            peer = pid.to_base58()
            if peer == self.peer_id:
                continue
            try:
                addrs = [str(a) for a in store.addrs(pid)]
            except Exception:
                addrs = []
            out.append({"peer_id": peer, "addrs": addrs, "connected": self.is_connected(peer),
                        "authorized": self.authorized.is_authorized(peer)})
        return sorted(out, key=lambda p: p["peer_id"])

    def statistics(self) -> NodeStatistics:
        admitted = self.admission.statistics() if self.admission is not None else None
        return NodeStatistics(self.peer_id, len(self.host.get_connected_peers()), self._dial_failures,
                              self._frame_errors, self._calls_served,
                              admitted.unauthenticated if admitted else 0, admitted.refused if admitted else 0)

    def _fire_peers_changed(self) -> None:
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    async def wait_peers_changed(self) -> None:
        await self._peers_changed.wait()

    # -- dialing ---------------------------------------------------------------------------
    def _swarm(self) -> Swarm:
        return cast(Swarm, self.host.get_network())

    async def connect(self, multiaddr: str) -> str:
        """Dial a full multiaddr (ending in ``/p2p/<id>``); returns the peer id."""
        peer_id = peer_id_in(multiaddr)
        if peer_id == self.peer_id:
            raise ConfigError("that multiaddr is this node itself")
        try:
            info = info_from_p2p_addr(ma.Multiaddr(multiaddr))
        except Exception as exc:
            raise ConfigError(f"invalid multiaddr {multiaddr!r}: {exc}") from None
        self._swarm().unblock_peer(info.peer_id)  # forget a failed dial: the peer may be back
        if not self.is_connected(peer_id):
            # An explicit address is the truth: libp2p would dial stale ones from the peerstore first.
            self.host.get_peerstore().clear_addrs(info.peer_id)
        try:
            with map_libp2p_errors(f"dialing {multiaddr}"), trio.fail_after(self.settings.dial_timeout):
                await self.host.connect(info)
        except PeerError:
            self._dial_failures += 1
            raise
        await self._remember(peer_id, [multiaddr])
        return peer_id

    async def _remember(self, peer_id: str, addrs: list[str]) -> None:
        if self.known is not None and addrs:
            known = self.known
            await trio.to_thread.run_sync(lambda: known.remember(peer_id, addrs))

    async def redial_known(self) -> None:
        """At start: dial the remembered peers this node still lists (each address once)."""
        if self.known is None:
            return
        for peer_id, addrs in self.known.peers().items():
            if self.is_connected(peer_id) or not self.authorized.is_listed(peer_id):
                continue
            for addr in addrs:
                try:
                    await self.connect(addr)
                    log.info("reconnected to remembered peer %s", peer_id)
                    break
                except (PeerError, ConfigError) as exc:
                    log.debug("remembered peer %s not at %s: %s", peer_id, addr, exc)

    def should_dial_found(self, peer_id: str) -> bool:
        """A peer found on the network (mDNS) is dialed only if this node lists it and is not connected."""
        return peer_id != self.peer_id and not self.is_connected(peer_id) and self.authorized.is_listed(peer_id)

    async def _open_stream(self, peer_id: str, protocol: str) -> INetStream:
        pid = ID.from_base58(peer_id)
        with map_libp2p_errors(f"opening {protocol} to {peer_id}"), trio.fail_after(self.settings.stream_timeout):
            if not self.is_connected(peer_id):
                self._swarm().unblock_peer(pid)
            return await self.host.new_stream(pid, [TProtocol(protocol)])

    async def ping(self, peer_id: str) -> float:
        """Round-trip time in seconds of one libp2p ping (32 random bytes echoed)."""
        stream = await self._open_stream(peer_id, str(PING_PROTOCOL))
        try:
            payload = secrets.token_bytes(32)
            with map_libp2p_errors(f"pinging {peer_id}"), trio.fail_after(self.settings.call_timeout):
                start = time.perf_counter()
                await stream.write(payload)
                echoed = b""
                while len(echoed) < 32:
                    chunk = await stream.read(32 - len(echoed))
                    if not chunk:
                        break
                    echoed += chunk
                rtt = time.perf_counter() - start
            if echoed != payload:
                raise PeerError(f"peer {peer_id} answered the ping with different bytes")
            return rtt
        finally:
            await close_quietly(stream)

    # -- peer exchange (exchange.py) -------------------------------------------------------
    async def exchange_peers(self, peer_id: str) -> list[str]:
        """Tell ``peer_id`` our addresses, learn its peers, dial the ones we authorize; returns those dialed."""
        return await self.exchange.ask(peer_id)

    async def run_peer_exchange(self) -> None:
        """Ask each newly connected listed peer for its peers, and one of them again now and then."""
        await self.exchange.run()

    # -- MCP and HTTP over libp2p ------------------------------------------------------------
    async def _open_mcp_stream(self, peer_id: str, protocol: str = MCP_PROTOCOL) -> INetStream:
        stream = await self._open_stream(peer_id, protocol)
        batch_window_updates(stream)
        return stream

    async def _open_http_stream(self, peer_id: str) -> INetStream:
        return await self._open_mcp_stream(peer_id, HTTP_PROTOCOL)

    def channel(self, peer_id: str) -> PeerChannel:
        channel = self._channels.get(peer_id)
        if channel is None:
            channel = PeerChannel(peer_id, lambda: self._open_mcp_stream(peer_id), self._nursery,
                                  max_frame_bytes=self.settings.max_frame_bytes)
            self._channels[peer_id] = channel
        return channel

    async def call(
        self,
        peer_id: str,
        method: str,
        params: dict[str, Any],
        *,
        on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """One MCP request to a peer on its long-lived stream (the caller owns the timeout)."""
        if peer_id == self.peer_id:
            raise ConfigError("a node does not call itself over libp2p")
        return await self.channel(peer_id).call(method, params, on_notification=on_notification)

    def _budget(self, peer_id: str) -> TokenBucket | None:
        """The peer's request budget, across its streams; none for peers refused anyway."""
        budget = self._budgets.get(peer_id)
        if budget is None and self.authorized.is_authorized(peer_id):
            budget = self._budgets[peer_id] = TokenBucket(self.settings.peer_requests_per_second,
                                                          self.settings.peer_request_burst)
        return budget

    async def _on_mcp_stream(self, stream: INetStream) -> None:
        """Serve one peer's MCP stream; nothing escapes into the host."""
        try:
            batch_window_updates(stream)
            peer_id = stream.muxed_conn.peer_id.to_base58()
            handler = self.frame_handler
            if handler is None:
                raise PeerError("this node serves no MCP handler")

            async def counted(message: dict[str, Any], *, peer_id: str, notify: Any) -> dict[str, Any] | None:
                self._calls_served += 1
                return await handler(message, peer_id=peer_id, notify=notify)

            def frame_error() -> None:
                self._frame_errors += 1

            await serve_stream(stream, peer_id, counted, authorized=self.authorized.is_authorized,
                               max_frame_bytes=self.settings.max_frame_bytes, budget=self._budget(peer_id),
                               on_frame_error=frame_error)
        except Exception:
            log.exception("MCP stream handler failed")
        finally:
            await close_quietly(stream)

    async def aclose(self) -> None:
        """Close every channel and the host (listener and connections): call before cancelling."""
        if self._closed:
            return
        self._closed = True
        await self.http.aclose()
        for channel in list(self._channels.values()):
            await channel.aclose()
        with trio.CancelScope(shield=True), trio.move_on_after(3):
            try:
                await self.host.close()
            except Exception as exc:
                log.warning("closing the libp2p host: %s", exc)
        if self.known is not None:
            self.known.close()
