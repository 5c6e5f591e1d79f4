"""The libp2p node: one host for the life of the process, owned by a Trio nursery.

Rules learned by measurement (see docs/architecture.md):

- TCP + Noise only: a plaintext, secio or TLS-only dialer is refused;
- yamux only (py-libp2p 0.8.1's mplex stalls answers while a read is pending; its "YAMUX"
  preference still offers and accepts mplex as a fallback, so the muxers are given explicitly);
  ``max_connections_per_peer=1`` (otherwise every dial waits 250 ms);
- before authentication: capped connections overall and per source, one deadline, multistream
  reads capped (admission.py, hardening.py);
- a deadline on every dial and stream open (a silent peer would hang 120 s);
- stream handlers never let an exception reach ``host.run()`` (it would tear
  the host down);
- the host is closed before anything is cancelled (leaving ``run()`` alone
  leaves the listener open and leaks sockets).

Size: one concept, the node as the rest of triomcp sees it: the host's construction and
lifecycle (``open_node``) and the ``Node`` methods over it (dialing, pings, peer exchange, MCP
streams); the mechanisms it uses live beside it (rpc, discovery, admission, hardening, authz).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import multiaddr as ma
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import Yamux

from triomcp.errors import ConfigError, PeerError
from triomcp.p2p import hardening
from triomcp.p2p._errors import close_quietly, map_libp2p_errors
from triomcp.p2p.admission import InboundGate
from triomcp.p2p.authz import AuthorizedPeers
from triomcp.p2p.discovery import (
    MdnsFinds,
    dial_found,
    keep_connected,
    peer_id_in,
    reachable_from_elsewhere,
    write_announce,
)
from triomcp.p2p.flow import batch_window_updates
from triomcp.p2p.framing import FrameDecoder, FrameIssue, encode_frame
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.p2p.peerstore import PEERS_FILE, KnownPeers
from triomcp.p2p.rpc import MCP_PROTOCOL, FrameHandler, PeerChannel, TokenBucket, serve_stream
from triomcp.settings import P2PSettings

__all__ = ["CLI_IDENTITY_FILE", "FRONTEND_IDENTITY_FILE", "IDENTITY_FILE", "Node", "NodeStatistics", "open_node"]

log = logging.getLogger("triomcp.p2p")

IDENTITY_FILE = "identity.key"
CLI_IDENTITY_FILE = "identity-cli.key"
FRONTEND_IDENTITY_FILE = "identity-frontend.key"
"""The HTTP server's identity when it fronts a standalone node (``p2p.mode = "local-node"``)."""
AUTHORIZED_FILE = "authorized_peers"
PEERS_PROTOCOL = "/triomcp/peers/1.0.0"
"""Peer exchange: the dialer sends ``{addrs}`` (its listen multiaddrs), the listener answers
``{peers: [{peer_id, addrs}]}`` (its connected, listed peers); one frame each way."""
PEERS_MAX_BYTES = 256 * 1024
PEERS_MAX_ENTRIES = 256
PEER_EXCHANGE_REFRESH = 10.0
INBOUND_SLOTS = 10_000_000


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


class _Notifee:
    """libp2p network events -> a Trio signal (event-driven reconnects, no polling)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        self._node._fire_peers_changed()

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._node._fire_peers_changed()

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


def _new_host(key_pair: KeyPair, settings: P2PSettings, *, mdns: bool, listen: list[ma.Multiaddr]) -> IHost:
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL: NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL): Yamux},
        # max_connections: py-libp2p 0.8.1 keeps every inbound connection's handler (and its slot
        # in an inbound limiter of max_connections - min_connections) alive until the host stops,
        # even after the connection closed; with the default (300 - 50) a node refuses every
        # inbound connection after its 250th, CLI calls included. Slots are cheap (measured in
        # docs/architecture.md); the connections this node keeps are bounded elsewhere (one per
        # peer, authorized peers only).
        # inbound_upgrade_timeout: one absolute deadline from the start of multistream-select to
        # the agreed muxer (measured: it ends silent and trickling peers too; admission.py).
        connection_config=ConnectionConfig(max_connections_per_peer=1, max_connections=INBOUND_SLOTS,
                                           inbound_upgrade_timeout=settings.handshake_timeout),
        enable_mDNS=mdns,
        listen_addrs=listen if mdns else None,
    )


async def read_one_frame(stream: INetStream, limit: int) -> dict[str, Any]:
    """The first frame on ``stream`` as a JSON object (PeerError if it ends first or is not one)."""
    decoder = FrameDecoder(limit)
    while True:
        data = await stream.read(65536)
        if not data:
            raise PeerError("the stream ended before a whole frame arrived")
        try:
            items = decoder.feed(data)
        except Exception as exc:
            raise PeerError(f"a bad frame: {exc}") from None
        for item in items:
            if isinstance(item, FrameIssue) or not isinstance(item, dict):
                raise PeerError(f"a bad frame: {getattr(item, 'message', item)!r}")
            return item


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
        self._announced: dict[str, list[str]] = {}
        """Listen multiaddrs each peer told us in a peer exchange (inbound connections show only
        the dialer's ephemeral port)."""

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
        """A peer found on the network (mDNS) is dialed only if this node lists it and is not
        already connected to it."""
        return peer_id != self.peer_id and not self.is_connected(peer_id) and self.authorized.is_listed(peer_id)

    async def _open_stream(self, peer_id: str, protocol: str) -> INetStream:
        pid = ID.from_base58(peer_id)
        with map_libp2p_errors(f"opening {protocol} to {peer_id}"), trio.fail_after(self.settings.stream_timeout):
            if not self.is_connected(peer_id):
                self._swarm().unblock_peer(pid)
            return await self.host.new_stream(pid, [TProtocol(protocol)])

    async def _open_mcp_stream(self, peer_id: str) -> INetStream:
        stream = await self._open_stream(peer_id, MCP_PROTOCOL)
        batch_window_updates(stream)
        return stream

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

    # -- peer exchange ---------------------------------------------------------------------
    def _exchange_view(self, asker: str) -> list[dict[str, Any]]:
        """The connected, listed peers (with addresses we can vouch for) we tell ``asker`` about."""
        out = []
        for peer in self.connected_peers():
            addrs = self._announced.get(peer)
            if peer != asker and addrs and self.authorized.is_listed(peer):
                out.append({"peer_id": peer, "addrs": addrs})
        return out

    async def _on_peers_stream(self, stream: INetStream) -> None:
        """Answer a peer exchange: only to authorized peers; nothing escapes into the host."""
        try:
            peer_id = stream.muxed_conn.peer_id.to_base58()
            if not self.authorized.is_authorized(peer_id):
                return
            with trio.fail_after(self.settings.stream_timeout):
                hello = await read_one_frame(stream, PEERS_MAX_BYTES)
            addrs = [a for a in hello.get("addrs", []) if isinstance(a, str) and a.endswith(f"/p2p/{peer_id}")]
            if addrs:
                self._announced[peer_id] = addrs[:8]
                await self._remember(peer_id, addrs[:8])
            with trio.fail_after(self.settings.stream_timeout):
                await stream.write(encode_frame({"peers": self._exchange_view(peer_id)}))
        except Exception as exc:
            log.debug("peer exchange with a peer failed: %s", exc)
        finally:
            await close_quietly(stream)

    async def exchange_peers(self, peer_id: str) -> list[str]:
        """Tell ``peer_id`` our addresses, learn its peers, dial the ones we authorize; returns those dialed."""
        stream = await self._open_stream(peer_id, PEERS_PROTOCOL)
        try:
            with map_libp2p_errors(f"exchanging peers with {peer_id}"), trio.fail_after(self.settings.call_timeout):
                await stream.write(encode_frame({"addrs": self.listen_addrs()}))
                answer = await read_one_frame(stream, PEERS_MAX_BYTES)
        finally:
            await close_quietly(stream)
        dialed = []
        for entry in answer.get("peers", [])[:PEERS_MAX_ENTRIES]:
            other = entry.get("peer_id") if isinstance(entry, dict) else None
            if (not isinstance(other, str) or other == self.peer_id or self.is_connected(other)
                    or not self.authorized.is_listed(other)):
                continue
            for addr in [a for a in entry.get("addrs", []) if isinstance(a, str)][:8]:
                try:
                    if peer_id_in(addr) != other:
                        continue
                    await self.connect(addr)
                    dialed.append(other)
                    break
                except (PeerError, ConfigError) as exc:
                    log.debug("peer exchange: %s unreachable at %s: %s", other, addr, exc)
        return dialed

    async def run_peer_exchange(self) -> None:
        """Ask each newly connected listed peer for its peers, and one of them again now and then.

        With a bootstrap address alone, every node of a mesh comes to know every other node it
        authorizes."""
        asked: dict[str, float] = {}
        while True:
            with trio.move_on_after(random.uniform(0.5, 1.5) * PEER_EXCHANGE_REFRESH):
                await self.wait_peers_changed()
            now = trio.current_time()
            connected = [p for p in self.connected_peers() if self.authorized.is_listed(p)]
            fresh = [p for p in connected if p not in asked]
            stale = [p for p in connected if now - asked.get(p, now) >= PEER_EXCHANGE_REFRESH]
            for peer in fresh + random.sample(stale, min(1, len(stale))):
                asked[peer] = now
                try:
                    dialed = await self.exchange_peers(peer)
                    if dialed:
                        log.info("peer exchange with %s: connected to %d more peers", peer[:16], len(dialed))
                except (PeerError, ConfigError) as exc:
                    log.debug("peer exchange with %s failed: %s", peer, exc)
            for peer in list(asked):
                if peer not in connected:
                    del asked[peer]

    # -- MCP over libp2p --------------------------------------------------------------------
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

            budget = self._budgets.get(peer_id)
            if budget is None and self.authorized.is_authorized(peer_id):  # others are refused anyway
                budget = self._budgets[peer_id] = TokenBucket(self.settings.peer_requests_per_second,
                                                              self.settings.peer_request_burst)

            def frame_error() -> None:
                self._frame_errors += 1

            await serve_stream(stream, peer_id, counted, authorized=self.authorized.is_authorized,
                               max_frame_bytes=self.settings.max_frame_bytes, budget=budget,
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
        for channel in list(self._channels.values()):
            await channel.aclose()
        with trio.CancelScope(shield=True), trio.move_on_after(3):
            try:
                await self.host.close()
            except Exception as exc:
                log.warning("closing the libp2p host: %s", exc)
        if self.known is not None:
            self.known.close()


@asynccontextmanager
async def open_node(
    settings: P2PSettings,
    data_dir: Path,
    *,
    frame_handler: FrameHandler | None = None,
    identity_file: str = IDENTITY_FILE,
    announce: bool = True,
) -> AsyncIterator[Node]:
    """Start a node, yield it once it listens, close it on the way out (before any cancel)."""
    await trio.to_thread.run_sync(lambda: data_dir.mkdir(mode=0o700, parents=True, exist_ok=True))
    key_pair = await trio.to_thread.run_sync(load_or_create_identity, data_dir / identity_file)
    local_keys = [data_dir / f for f in (CLI_IDENTITY_FILE, FRONTEND_IDENTITY_FILE) if f != identity_file]
    authorized = AuthorizedPeers(data_dir / AUTHORIZED_FILE, local_keys=local_keys)
    try:
        listen = [ma.Multiaddr(a) for a in settings.listen]
    except Exception as exc:
        raise ConfigError(f"p2p.listen: {exc}") from None
    # mDNS browses from the moment the host is built: catch its finds from then on.
    finds = MdnsFinds() if settings.mdns else None
    hardening.apply()  # GHSA-hmjq-g7pp-rw3x, until libp2p>=0.8.2 (idempotent; logs once)
    try:
        host = _new_host(key_pair, settings, mdns=settings.mdns, listen=listen)
        gate = InboundGate(max_total=settings.max_unauthenticated_inbound,
                           max_per_source=settings.max_unauthenticated_per_source)
        gate.install(host.get_network())
        async with _serving(host, key_pair, settings, data_dir, authorized, frame_handler, announce, listen,
                            finds, gate) as node:
            yield node
    finally:
        if finds is not None:
            finds.close()


@asynccontextmanager
async def _serving(host: IHost, key_pair: KeyPair, settings: P2PSettings, data_dir: Path,
                   authorized: AuthorizedPeers, frame_handler: FrameHandler | None, announce: bool,
                   listen: list[ma.Multiaddr], finds: MdnsFinds | None, gate: InboundGate) -> AsyncIterator[Node]:
    async with trio.open_nursery() as nursery:
        node = Node(host, key_pair, settings, data_dir, authorized, nursery, gate)
        node.frame_handler = frame_handler
        if announce:  # a node (server or `triomcp node`), not a CLI or front-end host
            node.known = await trio.to_thread.run_sync(KnownPeers, data_dir / PEERS_FILE)
        if frame_handler is not None:
            host.set_stream_handler(TProtocol(MCP_PROTOCOL), node._on_mcp_stream)
        host.set_stream_handler(TProtocol(PEERS_PROTOCOL), node._on_peers_stream)
        network = host.get_network()
        network.register_notifee(_Notifee(node))  # type: ignore[arg-type]
        # libp2p's host.run() swallows exceptions raised in its body (its background-service
        # manager does): keep the body's error and raise it again once run() has exited.
        # Cancellation needs no such care: Trio re-delivers it at the next checkpoint.
        failure: list[Exception] = []
        async with host.run(listen):
            try:
                # libp2p's auto-connector dials every peerstore entry to reach 150 connections;
                # this node dials who it is told to (explicit, bootstrap, announce) and no one else.
                connector = getattr(network, "auto_connector", None)
                if connector is not None:
                    await connector.stop()
                if announce:
                    await trio.to_thread.run_sync(write_announce, data_dir, node.peer_id, node.listen_addrs())
                for bootstrap in settings.bootstrap:
                    nursery.start_soon(keep_connected, bootstrap, node.connect, node.is_connected,
                                       node.wait_peers_changed)
                if settings.peer_exchange and announce:
                    nursery.start_soon(node.run_peer_exchange)
                if node.known is not None:
                    nursery.start_soon(node.redial_known)
                if finds is not None:
                    if not any(reachable_from_elsewhere(a) for a in node.listen_addrs()):
                        log.warning("p2p.mdns is on, but this node listens on no address another machine can "
                                    "dial (%s): set p2p.listen to an interface address, e.g. "
                                    "/ip4/192.168.1.10/tcp/4001", ", ".join(node.listen_addrs()))
                    nursery.start_soon(dial_found, finds, node.connect, node.should_dial_found)
                log.info("p2p node %s listening on %s", node.peer_id, ", ".join(node.listen_addrs()))
                yield node
            except Exception as exc:
                failure.append(exc)
            finally:
                await node.aclose()  # close the host first: leaving run() alone leaks the listener
                nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
