"""The libp2p host: built, run and closed by :func:`open_node`, one for the life of the process.

Rules learned by measurement (see docs/architecture.md):

- TCP + Noise only: a plaintext, secio or TLS-only dialer is refused;
- yamux only (py-libp2p 0.8.1's mplex stalls answers while a read is pending; its "YAMUX"
  preference still offers and accepts mplex as a fallback, so the muxers are given explicitly);
  ``max_connections_per_peer=1`` (otherwise every dial waits 250 ms);
- before authentication: capped connections overall and per source, one deadline, multistream
  reads capped (admission.py, hardening.py);
- every yamux frame is written whole, even when its writer is cancelled, or the connection is
  closed: a cut frame put the Noise stream out of step and killed the connection (whole_frames.py);
- libp2p's auto-connector is stopped: the node dials whom it is told to, no one else; and so is
  its connection pruner: the node's trimmer keeps ``p2p.connections_high`` (node.py);
- a wildcard listen address is announced (identify, peer exchange, the announce file) as this
  machine's interface addresses (``discovery.announce_addrs`` as libp2p's ``addrs_factory``);
- circuit relay v2 is mounted on every host (``circuit.py``: relayed connections accepted through
  this node's relays only; HOP served with ``p2p.relay.service``, for authorized peers only), and a
  node configured with relays keeps a reservation on each (``reservations.py``);
- libp2p's own dial retries are off (``RetryConfig(max_retries=0)``): the one retry and backoff
  is ours (``keep_connected``), and each of libp2p's attempts logged an ERROR of its own;
- the finding, keeping and trimming loops run until the node begins closing
  (``Node.run_until_closing``): a closing node dials no one;
- ``host.run()`` swallows exceptions raised in its body: the body's error is raised again after;
- the host is closed before anything is cancelled (leaving ``run()`` alone
  leaves the listener open and leaks sockets).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import multiaddr as ma
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL

from triomcp.errors import ConfigError
from triomcp.p2p import hardening, read_ahead, whole_frames
from triomcp.p2p.admission import InboundGate
from triomcp.p2p.authz import AuthorizedPeers
from triomcp.p2p.discovery import (
    MdnsFinds,
    announce_addrs,
    dial_found,
    keep_bootstrap_connected,
    reachable_from_elsewhere,
    write_announce,
)
from triomcp.p2p.exchange import PEERS_PROTOCOL
from triomcp.p2p.flow import batch_window_updates
from triomcp.p2p.gossip import start_gossip
from triomcp.p2p.http import HTTP_PROTOCOL
from triomcp.p2p.http_serve import AsgiApp, HttpServer
from triomcp.p2p.identity import (
    CLI_IDENTITY_FILE,
    FRONTEND_IDENTITY_FILE,
    IDENTITY_FILE,
    load_or_create_identity,
)
from triomcp.p2p.node import AUTHORIZED_FILE, Node
from triomcp.p2p.peerstore import PEERS_FILE, KnownPeers
from triomcp.p2p.reachability import DIALBACK_PROTOCOL
from triomcp.p2p.reservations import Reservations
from triomcp.p2p.rpc import MCP_PROTOCOL, FrameHandler
from triomcp.p2p.whole_frames import WholeFrameYamux
from triomcp.settings import P2PSettings

__all__ = ["open_node"]

log = logging.getLogger("triomcp.p2p")

INBOUND_SLOTS = 10_000_000


class _Notifee:
    """libp2p network events -> Trio signals on the node (event-driven reconnects and moves, no
    polling): connections opened and closed (``Node._on_connection``), streams closed
    (``Node._on_stream_closed``, which ``direct.py`` waits on); a stream opened gets yamux credit
    in batches (``flow.batch_window_updates``). The node's one notifee (pubsub
    registers its own)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def opened_stream(self, network: Any, stream: Any) -> None:
        batch_window_updates(stream)  # every stream, before its protocol is negotiated (p2p/flow.py)

    async def closed_stream(self, network: Any, stream: Any) -> None:
        self._node._on_stream_closed()

    async def connected(self, network: Any, conn: Any) -> None:
        self._changed(conn, opened=True)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._changed(conn, opened=False)
        self._node._on_stream_closed()  # its streams ended with it

    def _changed(self, conn: Any, *, opened: bool) -> None:
        try:
            peer_id = conn.muxed_conn.peer_id.to_base58()
        except Exception:
            self._node._fire_peers_changed()
            return
        self._node._on_connection(peer_id, opened=opened, conn=id(conn.muxed_conn))

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


def _new_host(key_pair: KeyPair, settings: P2PSettings, *, mdns: bool, listen: list[ma.Multiaddr]) -> IHost:
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL: NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)},
        # py-libp2p 0.8.1 builds yamux connections by name, not from this class: whole_frames.apply()
        # is what puts WholeFrameYamux in use; naming it here keeps it so if libp2p stops doing that.
        muxer_opt={TProtocol(YAMUX_PROTOCOL): WholeFrameYamux},
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
        addrs_factory=announce_addrs,
    )


@asynccontextmanager
async def open_node(
    settings: P2PSettings,
    data_dir: Path,
    *,
    frame_handler: FrameHandler | None = None,
    identity_file: str = IDENTITY_FILE,
    announce: bool = True,
    http_app: AsgiApp | None = None,
    http_max_body_bytes: int = 1024 * 1024,
    gossip: bool = True,
    key_pair: KeyPair | None = None,
) -> AsyncIterator[Node]:
    """Start a node, yield it once it listens, close it on the way out (before any cancel).

    ``gossip``: mount the work topic (``p2p/gossip.py``) on a node that announces itself.
    ``key_pair``: the node's identity, as the caller already read it (the server reads it once, for
    the owner tag of its ids too); without one, ``identity_file`` in ``data_dir`` is read or created."""
    await trio.to_thread.run_sync(lambda: data_dir.mkdir(mode=0o700, parents=True, exist_ok=True))
    if key_pair is None:
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
    whole_frames.apply()  # yamux frames written whole, whatever cancels their writer (idempotent)
    read_ahead.apply()  # TCP reads take what the socket has, not 2 bytes at a time (idempotent)
    try:
        host = _new_host(key_pair, settings, mdns=settings.mdns, listen=listen)
        cast(Swarm, host.get_network()).retry_config = RetryConfig(max_retries=0)
        gate = InboundGate(max_total=settings.max_unauthenticated_inbound,
                           max_per_source=settings.max_unauthenticated_per_source)
        gate.install(host.get_network())
        new_node = functools.partial(Node, host, key_pair, settings, data_dir, authorized, admission=gate)
        async with _serving(new_node, listen, finds, frame_handler=frame_handler, announce=announce, gossip=gossip,
                            http_app=http_app, http_max_body_bytes=http_max_body_bytes) as node:
            yield node
    finally:
        if finds is not None:
            finds.close()


@asynccontextmanager
async def _serving(new_node: Callable[[trio.Nursery], Node], listen: list[ma.Multiaddr],
                   finds: MdnsFinds | None, *, frame_handler: FrameHandler | None,
                   announce: bool, gossip: bool, http_app: AsgiApp | None,
                   http_max_body_bytes: int) -> AsyncIterator[Node]:
    """Run the host with the node's handlers and services; on the way out close the host first,
    then cancel the node's nursery."""
    async with trio.open_nursery() as nursery:
        node = new_node(nursery)
        node.frame_handler = frame_handler
        if announce:  # a node (server or `triomcp node`), not a CLI or front-end host
            node.known = await trio.to_thread.run_sync(KnownPeers, node.data_dir / PEERS_FILE)
            node.in_mesh = True
        host = node.host
        if frame_handler is not None:
            host.set_stream_handler(TProtocol(MCP_PROTOCOL), node._on_mcp_stream)
        host.set_stream_handler(TProtocol(PEERS_PROTOCOL), node.exchange.serve)
        node.circuits.mount()
        node.hole_punch.mount()
        host.set_stream_handler(TProtocol(DIALBACK_PROTOCOL), node.reachability.serve)
        if http_app is not None:  # HTTP over libp2p: the node's own HTTP app, for authorized peers
            server = HttpServer(http_app, authorized=node.authorized.is_authorized,
                                max_body_bytes=http_max_body_bytes, timeout=node.settings.stream_timeout)
            host.set_stream_handler(TProtocol(HTTP_PROTOCOL), node.serving(server.on_stream))
        host.get_network().register_notifee(_Notifee(node))  # type: ignore[arg-type]
        # libp2p's host.run() swallows exceptions raised in its body (its background-service
        # manager does): keep the body's error and raise it again once run() has exited. That
        # includes the BaseExceptions that are not errors of the program (KeyboardInterrupt,
        # SystemExit, a test's failure or skip): swallowed, a failed check would pass.
        # Cancellation needs no such care: Trio re-delivers it at the next checkpoint.
        failure: list[BaseException] = []
        async with host.run(listen):
            try:
                if announce and gossip:  # work announcements (p2p/gossip.py): mounted before anyone is dialed
                    node.gossip = await start_gossip(host, nursery, is_authorized=node.authorized.is_authorized)
                await _start_services(node, nursery, finds, announce=announce)
                log.info("p2p node %s listening on %s", node.peer_id, ", ".join(node.listen_addrs()))
                yield node
            except trio.Cancelled:
                raise
            except BaseException as exc:  # raised again below, once run() has exited
                failure.append(exc)
            finally:
                if node.gossip is not None:
                    await node.gossip.aclose()
                await node.aclose()  # close the host first: leaving run() alone leaks the listener
                nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]


async def _start_services(node: Node, nursery: trio.Nursery, finds: MdnsFinds | None, *,
                          announce: bool) -> None:
    """Once the host listens: the announce file, and the tasks that find and keep peers."""
    # libp2p's auto-connector dials every peerstore entry to reach 150 connections;
    # this node dials who it is told to (explicit, bootstrap, announce) and no one else.
    connector = getattr(node.host.get_network(), "auto_connector", None)
    if connector is not None:
        await connector.stop()
    # libp2p's pruner (past 300 connections) spares every connection with a stream open, which is
    # all of ours: the node's trimmer keeps p2p.connections_high instead (Node.run_trimmer).
    pruner = getattr(node.host.get_network(), "connection_pruner", None)
    if pruner is not None:
        await pruner.stop()
    if announce:
        await trio.to_thread.run_sync(write_announce, node.data_dir, node.peer_id, node.listen_addrs(),
                                      node.reachability.state)
    for bootstrap in node.settings.bootstrap:
        nursery.start_soon(node.run_until_closing, functools.partial(
            keep_bootstrap_connected, bootstrap, node.connect, node.is_connected, node.wait_peers_changed,
            pause=node.redial_pause, needed=node.wants_peers))
    if announce:
        nursery.start_soon(node.run_until_closing, node.run_trimmer)
    relays = [*node.settings.relay.use, *(node.settings.bootstrap if node.settings.relay.use_bootstrap else [])]
    if relays and announce:
        node.reservations = Reservations(node, relays)
        node.circuits.relays = node.reservations.relays
        nursery.start_soon(node.run_until_closing, node.reservations.run)
    if announce and node.settings.reachability.check:
        nursery.start_soon(node.run_until_closing, node.reachability.run)
    if announce and node.settings.relay.hole_punch:
        nursery.start_soon(node.run_until_closing, node.hole_punch.run)
    if announce:  # calls move to a direct connection once one appears beside a relayed one
        nursery.start_soon(node.run_until_closing, node.to_direct.run)
    if node.settings.peer_exchange and announce:
        nursery.start_soon(node.run_until_closing, node.run_peer_exchange)
    if node.known is not None:
        nursery.start_soon(node.run_until_closing, node.redial_known)
    if finds is not None:
        if not any(reachable_from_elsewhere(a) for a in node.listen_addrs()):
            log.warning("p2p.mdns is on, but this node listens on no address another machine can "
                        "dial (%s): set p2p.listen to an interface address, e.g. "
                        "/ip4/192.168.1.10/tcp/4001", ", ".join(node.listen_addrs()))
        nursery.start_soon(node.run_until_closing, functools.partial(
            dial_found, finds, node.connect, node.should_dial_found))
