"""The libp2p node as the rest of triomcp sees it: ids, peers, dialing, pings and MCP calls.

A :class:`Node` wraps one running host (``host.py`` builds it, runs it and closes it, in
``open_node``). Rules it keeps (see docs/architecture.md):

- a deadline on every dial and stream open (a silent peer would hang 120 s);
- stream handlers never let an exception reach ``host.run()`` (it would tear the host down);
- one long-lived MCP stream per peer (:class:`~triomcp.p2p.rpc.PeerChannel`), requests multiplexed
  by id; each peer has one request budget across its streams and reconnections.

Connections (``connections.py``, :class:`~triomcp.p2p.connections.Connections`, owned as
``node.connections``): which are in use, :meth:`Node.protect`-ed or young, which peers said
goodbye, the trimmer (:meth:`Node.run_trimmer`) that keeps ``p2p.connections_high``, and dials on
demand (:meth:`Node.ensure_connected`); the Node keeps their methods under the same names.

Closing (:meth:`Node.begin_closing`, called by :meth:`Node.aclose` if not before): the node dials
no one, its finding and keeping loops stop, and its listed peers are told it is leaving, so they
do not redial it.

Beside it: ``rpc`` (MCP streams), ``exchange`` (peer exchange, goodbyes), ``connections``,
``http`` and ``http_serve`` (HTTP over libp2p), ``discovery``, ``authz``, ``circuit`` and
``reservations`` (circuit relay v2: the relay service, relayed connections, slots on relays),
``reachability`` (trusted peers dial this node back: unknown, public, private) and ``holepunch``
(DCUtR on relayed connections to listed peers), ``direct`` (calls move to a direct connection
once one appears beside a relayed one).

Size: about 650 lines: the one facade of a running host (identity, peers, dialing, pings,
peer exchange, relays, the MCP and HTTP streams, closing), each operation a few lines over the
modules beside it; and the connection methods other code calls on a Node (``protect``, ``trim``,
``said_bye``, ...), kept as one-line delegations to ``connections.py``, which holds their state
and logic.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
from triomcp.p2p.circuit import Circuits, is_circuit, relay_of
from triomcp.p2p.connections import Connections
from triomcp.p2p.direct import MoveToDirect
from triomcp.p2p.discovery import peer_id_in, reaches_self
from triomcp.p2p.exchange import PeerExchange
from triomcp.p2p.gossip import Gossip
from triomcp.p2p.holepunch import HolePunch
from triomcp.p2p.http import HTTP_PROTOCOL, HttpStreams, Response
from triomcp.p2p.identity import peer_id_of
from triomcp.p2p.peerstore import KnownPeers
from triomcp.p2p.reachability import PUBLIC, Reachability
from triomcp.p2p.reservations import Reservations
from triomcp.p2p.rpc import MCP_PROTOCOL, FrameHandler, PeerChannel, serve_stream
from triomcp.settings import P2PSettings

__all__ = ["AUTHORIZED_FILE", "Node", "NodeStatistics"]

log = logging.getLogger("triomcp.p2p")

AUTHORIZED_FILE = "authorized_peers"
"""Who may call this node, in its data dir (``authz.py``)."""

_NO_DIAL: contextvars.ContextVar[bool] = contextvars.ContextVar("triomcp_no_dial", default=False)
"""Set while a stream is opened only on an existing connection (``_open_stream(dial=False)``)."""


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
    connections_trimmed: int = 0
    """Connections closed to stay within ``p2p.connections_high`` since the node started."""
    on_demand_dials: int = 0
    """Dials to peers not connected when they were needed (``ensure_connected``, a call, a stream)."""
    connections_opened: int = 0
    """Connections opened since the node started, either way."""
    exchanges: dict[str, int] = dataclasses.field(default_factory=dict)
    """The peer exchange's counts since start: ``asked`` (exchanges started), ``answered``, ``visits``."""


class _UsedHttp(HttpStreams):
    """:class:`HttpStreams` that marks the peer in use while a request to it runs (never trimmed then)."""

    def __init__(self, connections: Connections, open_stream: Callable[[str], Awaitable[Any]], *,
                 write_timeout: float) -> None:
        super().__init__(open_stream, write_timeout=write_timeout)
        self._connections = connections

    @contextlib.asynccontextmanager
    async def request(self, peer_id: str, *args: Any, **kwargs: Any) -> AsyncIterator[Response]:
        with self._connections.using(peer_id):
            async with super().request(peer_id, *args, **kwargs) as response:
                yield response


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
        self._stream_ended = trio.Event()
        self._dial_failures = 0
        self._frame_errors = 0
        self._calls_served = 0
        self._budgets: dict[str, TokenBucket] = {}
        self._relayed_dials: dict[str, trio.Lock] = {}
        """A relayed dial in progress, by peer (``_connect_relayed``)."""
        """Per-peer request budgets, kept across the peer's streams and reconnections."""
        self._closed = False
        self._closing = False
        self._services: set[trio.CancelScope] = set()
        """The finding and keeping loops (:meth:`run_until_closing`): cancelled when closing begins."""
        self.connections = Connections(self)
        """In use, protected, said goodbye; the trimmer; dials on demand (``connections.py``)."""
        self.in_mesh = False
        """A node of the mesh (server or ``triomcp node``), not a CLI or front-end host: says goodbye."""
        self.frame_handler: FrameHandler | None = None
        self.known: KnownPeers | None = None
        """Peers remembered across restarts (nodes only; the CLI's short-lived host has none)."""
        self.exchange = PeerExchange(self)  # /triomcp/peers/1.0.0, both halves
        self.gossip: Gossip | None = None
        """The work topic (``p2p/gossip.py``), on nodes that take part in the mesh (not a CLI's host)."""
        self.http: HttpStreams = _UsedHttp(self.connections, self._open_http_stream,
                                           write_timeout=settings.stream_timeout)
        """HTTP requests to peers over ``/http/1.1`` (pooled streams)."""
        self.circuits = Circuits(host, settings.relay, is_authorized=authorized.is_authorized,
                                 using=self.connections.using)
        """Circuit relay v2 (``circuit.py``): the relay service, relayed connections, circuit dials."""
        self.reservations: Reservations | None = None
        """Slots reserved on relays (``reservations.py``), on nodes configured with relays."""
        self.reachability = Reachability(self)
        """Is this node publicly reachable (``reachability.py``): its trusted peers dial it back."""
        self.hole_punch = HolePunch(self)
        """DCUtR for relayed connections to authorized peers (``holepunch.py``)."""
        self.to_direct = MoveToDirect(self)
        """Calls move to a direct connection once one appears beside a relayed one (``direct.py``)."""
        self._guard_dials()

    def _guard_dials(self) -> None:
        """libp2p's ``Swarm.new_stream`` dials a peer it has no connection to, whatever the caller
        checked before: a peer that went between that check and the stream (a refresh round's peer
        that disconnected, a stream opened while closing) would be dialed back. Its one dial
        entry, ``dial_peer``, refuses while a stream is opened with ``dial=False`` or once closing
        has begun. (That redial also met a py-libp2p race: the peer closing its side at that
        moment kept the new connection open without listing it, so neither side ever closed it.)"""
        swarm = self.host.get_network()
        dial_peer = swarm.dial_peer

        async def guarded(peer_id: ID) -> Any:
            if _NO_DIAL.get():
                raise PeerError(f"not connected to {peer_id}")
            if self._closing:
                raise PeerError(f"this node is closing: not dialing {peer_id}")
            return await dial_peer(peer_id)

        swarm.dial_peer = guarded  # type: ignore[method-assign]

    # -- identity and peers ---------------------------------------------------------------
    def listen_addrs(self) -> list[str]:
        """The addresses peers are told: a wildcard listen address stands for this machine's
        interface addresses (``discovery.announce_addrs``, libp2p's ``addrs_factory``)."""
        return [str(a) for a in self.host.get_addrs()]

    def relayed_addrs(self) -> list[str]:
        """This node's addresses through the relays where it holds a reservation now."""
        return self.reservations.relayed_addrs() if self.reservations is not None else []

    def announces_relayed(self) -> bool:
        """Does this node tell peers its relayed addresses? Unless it is publicly reachable."""
        return self.reachability.state != PUBLIC

    def announced_addrs(self, limit: int | None = None) -> list[str]:
        """What this node tells its peers (peer exchange, mesh announcements): its listen addresses,
        then its relayed ones unless it is publicly reachable (``reachability.py``); with ``limit``,
        the relayed ones are kept and the listen ones fill the rest (a peer behind NAT is reached
        only through them)."""
        relayed = self.relayed_addrs() if self.announces_relayed() else []
        if limit is None:
            return [*self.listen_addrs(), *relayed]
        relayed = relayed[:limit]
        return [*self.listen_addrs()[:limit - len(relayed)], *relayed]

    def connections_to(self, peer_id: str) -> list[dict[str, Any]]:
        """Each open connection to ``peer_id``: ``{"kind": "direct", "addr": ..., "streams": n}`` or
        ``{"kind": "relayed", "relay": <relay peer id>, "streams": n}`` (``circuit.py``)."""
        return self.circuits.connections_to(peer_id)

    def relays_in_use(self) -> set[str]:
        """The relays this node's relayed connections run through (their connections carry those)."""
        return self.circuits.relays_in_use(self._connected())

    def reaches_self(self, multiaddr: str) -> bool:
        """Would dialing ``multiaddr`` reach this node (its id, a wildcard, one of its listeners)?"""
        return reaches_self(multiaddr, self.peer_id, [str(a) for a in self.host.get_transport_addrs()])

    def _connected(self) -> set[str]:
        return {p.to_base58() for p in self.host.get_connected_peers()}

    def connected_peers(self) -> list[str]:
        return sorted(self._connected())

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self._connected()

    def connected_since(self, peer_id: str) -> float | None:
        """When the connection to ``peer_id`` opened (Trio's clock), if it is connected."""
        return self.connections.connected_since(peer_id)

    def wants_peers(self) -> bool:
        """Fewer than ``p2p.connections_low`` listed peers connected: the exchange may dial more."""
        return self.connections.wants_peers()

    def supports(self, peer_id: str, protocol: str) -> bool | None:
        """Does the peer serve ``protocol``, as identify told; None until identify has."""
        try:
            protocols = self.host.get_peerstore().get_protocols(ID.from_base58(peer_id))
        except Exception:
            return None
        return (protocol in protocols) if protocols else None

    def known_peers(self) -> list[dict[str, Any]]:
        """Every peer in the peerstore or remembered, with its addresses (this node excluded)."""
        store = self.host.get_peerstore()
        found: dict[str, list[str]] = {}
        for pid in store.peer_ids():
            try:
                found[pid.to_base58()] = [str(a) for a in store.addrs(pid)]
            except Exception:
                found[pid.to_base58()] = []
        for peer, addrs in (self.known.peers() if self.known is not None else {}).items():
            found[peer] = list(dict.fromkeys([*found.get(peer, []), *addrs]))
        connected = self._connected()
        return [{"peer_id": peer, "addrs": addrs, "connected": peer in connected,
                 "connections": self.connections_to(peer) if peer in connected else [],
                 "authorized": self.authorized.is_authorized(peer)}
                for peer, addrs in sorted(found.items()) if peer != self.peer_id]

    def statistics(self) -> NodeStatistics:
        admitted = self.admission.statistics() if self.admission is not None else None
        return NodeStatistics(self.peer_id, len(self.host.get_connected_peers()), self._dial_failures,
                              self._frame_errors, self._calls_served,
                              admitted.unauthenticated if admitted else 0, admitted.refused if admitted else 0,
                              connections_trimmed=self.connections.trimmed,
                              on_demand_dials=self.connections.on_demand_dials,
                              connections_opened=self.connections.opened,
                              exchanges={"asked": self.exchange.asks, "answered": self.exchange.served,
                                         "visits": self.exchange.visits})

    def relay_status(self) -> dict[str, Any]:
        """Circuit relay v2 as ``p2p_status`` shows it: the service (reservations held here for
        peers, refusals), this node's own reservations on its relays, with its relayed addresses
        (and whether it announces them), its hole punches, the relayed connections closed once a
        direct one appeared (``to_direct``), and its reachability (``reachability``:
        ``p2p_status`` shows it beside ``relay``)."""
        service = self.circuits.statistics()
        return {"service": dataclasses.asdict(service),
                "reservations": self.reservations.statistics() if self.reservations is not None else [],
                "relayed_addrs": self.relayed_addrs(), "announces_relayed": self.announces_relayed(),
                "hole_punch": dataclasses.asdict(self.hole_punch.statistics()),
                "to_direct": dataclasses.asdict(self.to_direct.statistics()),
                "reachability": dataclasses.asdict(self.reachability.statistics())}

    def _fire_peers_changed(self) -> None:
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    async def wait_peers_changed(self) -> None:
        await self._peers_changed.wait()

    def next_peers_change(self) -> trio.Event:
        """The event set at the next change of the connected peers: a loop takes it before it looks
        at the peers and waits on it after, so no change that came meanwhile is missed."""
        return self._peers_changed

    def _on_connection(self, peer_id: str, *, opened: bool, conn: int | None = None) -> None:
        """A connection opened or closed (the host's notifee; ``conn``: ``id()`` of its muxed connection)."""
        self.connections.on_connection(peer_id, opened=opened, conn=conn)
        self._fire_peers_changed()

    def _on_stream_closed(self) -> None:
        """A stream closed, or a connection with its streams (the host's notifee)."""
        self._stream_ended.set()
        self._stream_ended = trio.Event()

    def next_stream_end(self) -> trio.Event:
        """The event set when the next stream or connection closes, taken and waited on as
        :meth:`next_peers_change` is: ``direct.py`` waits for a relayed connection to fall unused."""
        return self._stream_ended

    # -- in use, protected, goodbyes (connections.py) ----------------------------------------
    @property
    def _inflight(self) -> Mapping[str, int]:
        """Requests in flight per peer (tests wait on it)."""
        return self.connections.inflight

    def protect(self, peer_id: str) -> contextlib.AbstractContextManager[None]:
        """While in this block, the connection to ``peer_id`` is never trimmed (nested uses count:
        the mesh holds it while it runs a task leased from that owner)."""
        return self.connections.protect(peer_id)

    def _said_bye(self, peer_id: str, bye: str, conn: int | None = None) -> None:
        """``peer_id`` said goodbye (``exchange.LEAVING`` or ``TRIMMING``) on connection ``conn``."""
        self.connections.heard_bye(peer_id, bye, conn)

    def said_bye(self, peer_id: str) -> str | None:
        """``LEAVING`` or ``TRIMMING`` while that goodbye holds (it is not dialed then), else None."""
        return self.connections.said_bye(peer_id)

    def redial_pause(self, peer_id: str) -> tuple[float, str] | None:
        """For a reconnect loop (``keep_connected``'s ``pause``): once per goodbye, how long to wait
        before redialing the peer that said it, and why; None to redial at once."""
        return self.connections.redial_pause(peer_id)

    # -- dialing ---------------------------------------------------------------------------
    def _swarm(self) -> Swarm:
        return cast(Swarm, self.host.get_network())

    @property
    def closing(self) -> bool:
        """Closing has begun: this node dials no one."""
        return self._closing

    async def connect(self, multiaddr: str) -> str:
        """Dial a full multiaddr (ending in ``/p2p/<id>``), a relayed one
        (``<relay multiaddr>/p2p-circuit/p2p/<id>``) included; returns the peer id."""
        peer_id = peer_id_in(multiaddr)
        if peer_id == self.peer_id:
            raise ConfigError("that multiaddr is this node itself")
        if is_circuit(multiaddr):
            return await self._connect_relayed(multiaddr, peer_id)
        if self.reaches_self(multiaddr):
            raise ConfigError(f"{multiaddr} would reach this node itself (a wildcard address, or one of its "
                              "own listeners): not dialing it")
        if self._closing:
            raise PeerError(f"this node is closing: not dialing {peer_id}")
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
        self.connections.dialed(peer_id, multiaddr)
        await self._remember(peer_id, [multiaddr])
        return peer_id

    async def _connect_relayed(self, multiaddr: str, peer_id: str) -> str:
        """Dial ``peer_id`` through the relay its circuit address names (``circuit.py``)."""
        relay = relay_of(multiaddr)
        if relay is None:
            raise ConfigError(f"{multiaddr!r}: a relayed address names its relay: "
                              "<relay multiaddr>/p2p/<relay id>/p2p-circuit/p2p/<peer id>")
        if relay == self.peer_id:
            raise ConfigError(f"{multiaddr} is a circuit through this node itself: not dialing it")
        if self._closing:
            raise PeerError(f"this node is closing: not dialing {peer_id}")
        try:
            pid = ID.from_base58(peer_id)
            ma.Multiaddr(multiaddr)
        except Exception as exc:
            raise ConfigError(f"invalid multiaddr {multiaddr!r}: {exc}") from None
        # The peer's stored addresses stay: the library first tries the circuits it stored itself,
        # which lack the relay's id and fail at once, without a byte sent.
        self._swarm().unblock_peer(pid)
        # One relayed dial per peer at a time, and none once connected: libp2p's swarm dedups its
        # own dials, not the relay transport's, and each extra connection is a circuit on the relay.
        lock = self._relayed_dials.setdefault(peer_id, trio.Lock())
        try:
            with map_libp2p_errors(f"dialing {multiaddr}"), trio.fail_after(self.settings.dial_timeout):
                async with lock:
                    if not self.is_connected(peer_id):
                        await self.circuits.dial(multiaddr)
        except PeerError:
            self._dial_failures += 1
            raise
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._relayed_dials.pop(peer_id, None)
        self.connections.dialed(peer_id, multiaddr)
        await self._remember(peer_id, [multiaddr])
        return peer_id

    async def ensure_connected(self, peer_id: str, addrs: Sequence[str] = ()) -> None:
        """Connect to ``peer_id`` unless it is connected: at ``addrs``, then where the peerstore and
        ``KnownPeers`` say (:meth:`Connections.ensure_connected`). PeerError when it cannot be reached."""
        await self.connections.ensure_connected(peer_id, addrs)

    async def _remember(self, peer_id: str, addrs: list[str]) -> None:
        if self.known is not None and addrs and self.known.would_change(peer_id, addrs):
            known = self.known
            await trio.to_thread.run_sync(lambda: known.remember(peer_id, addrs))

    async def redial_known(self) -> None:
        """At start: dial the remembered peers this node still lists (each address once), until
        ``p2p.connections_low`` listed peers are connected."""
        if self.known is None:
            return
        for peer_id, addrs in self.known.peers().items():
            if not self.wants_peers():
                return
            if self.is_connected(peer_id) or not self.authorized.is_listed(peer_id) or self.said_bye(peer_id):
                continue
            for addr in addrs:
                try:
                    await self.connect(addr)
                    log.info("reconnected to remembered peer %s", peer_id)
                    break
                except (PeerError, ConfigError) as exc:
                    log.debug("remembered peer %s not at %s: %s", peer_id, addr, exc)

    def should_dial_found(self, peer_id: str) -> bool:
        """A peer found on the network (mDNS) is dialed only if this node lists it, is not connected
        to it and wants more peers (its address stays in the peerstore for a dial on demand)."""
        return (peer_id != self.peer_id and not self.is_connected(peer_id) and self.authorized.is_listed(peer_id)
                and self.wants_peers() and self.said_bye(peer_id) is None)

    async def _open_stream(self, peer_id: str, protocol: str, *, dial: bool = True) -> INetStream:
        """A new stream to the peer; one not connected is dialed first (``dial``), as on demand."""
        if not self.is_connected(peer_id):
            if not dial:
                raise PeerError(f"not connected to {peer_id}")
            await self.connections.dial_on_demand(peer_id, (), what="peer")
        pid = ID.from_base58(peer_id)
        token = _NO_DIAL.set(not dial)
        try:
            with map_libp2p_errors(f"opening {protocol} to {peer_id}"), trio.fail_after(self.settings.stream_timeout):
                return await self.host.new_stream(pid, [TProtocol(protocol)])
        finally:
            _NO_DIAL.reset(token)

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

    # -- finding and keeping peers (exchange.py, discovery.py), trimming (connections.py) --
    async def exchange_peers(self, peer_id: str) -> list[str]:
        """Tell ``peer_id`` our addresses, learn its peers, dial the ones we authorize (while this
        node wants more peers); returns those dialed."""
        return await self.exchange.ask(peer_id)

    async def run_peer_exchange(self) -> None:
        """Ask each newly connected listed peer for its peers, and one of them again now and then."""
        await self.exchange.run()

    async def run_until_closing(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``fn(*args)`` (a finding or keeping loop) until it returns or closing begins."""
        with trio.CancelScope() as scope:
            if self._closing:
                return
            self._services.add(scope)
            try:
                await fn(*args)
            finally:
                self._services.discard(scope)

    @property
    def trim_grace(self) -> float:
        """Seconds a new connection is never trimmed (tests shorten it)."""
        return self.connections.trim_grace

    @trim_grace.setter
    def trim_grace(self, seconds: float) -> None:
        self.connections.trim_grace = seconds

    async def trim(self) -> float | None:
        """Close connections above ``p2p.connections_high`` down to ``connections_low``, telling
        listed peers first (:meth:`Connections.trim`); returns when to look again, or None."""
        return await self.connections.trim()

    async def run_trimmer(self) -> None:
        """Trim whenever the connected peers change (and when a connection's grace period ends)."""
        await self.connections.run_trimmer()

    # -- MCP and HTTP over libp2p ------------------------------------------------------------
    async def _open_mcp_stream(self, peer_id: str, protocol: str = MCP_PROTOCOL) -> INetStream:
        return await self._open_stream(peer_id, protocol)

    async def _open_http_stream(self, peer_id: str) -> INetStream:
        return await self._open_mcp_stream(peer_id, HTTP_PROTOCOL)

    async def renew_streams(self, peer_id: str) -> None:
        """The next calls to ``peer_id`` open new streams (libp2p puts them on its best connection):
        its MCP stream is retired, its idle HTTP streams dropped (``direct.py``, once a direct
        connection appeared beside a relayed one)."""
        await self.http.drop(peer_id)
        channel = self._channels.get(peer_id)
        if channel is not None:
            await channel.retire()

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
        with self.connections.using(peer_id):
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
            peer_id = stream.muxed_conn.peer_id.to_base58()
            handler = self.frame_handler
            if handler is None:
                raise PeerError("this node serves no MCP handler")

            async def counted(message: dict[str, Any], *, peer_id: str, notify: Any) -> dict[str, Any] | None:
                self._calls_served += 1
                with self.connections.using(peer_id):
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

    def serving(self, on_stream: Callable[[INetStream], Awaitable[None]]) -> Callable[[INetStream], Awaitable[None]]:
        """A stream handler that marks the peer in use while ``on_stream`` serves it (HTTP over libp2p)."""
        async def handler(stream: INetStream) -> None:
            try:
                peer_id = stream.muxed_conn.peer_id.to_base58()
            except Exception:
                await on_stream(stream)
                return
            with self.connections.using(peer_id):
                await on_stream(stream)

        return handler

    # -- closing ---------------------------------------------------------------------------
    async def begin_closing(self) -> None:
        """From now on dial no one (``connect``, ``ensure_connected`` and streams to peers not
        connected raise PeerError at once), stop the finding, keeping and trimming loops, and tell
        the connected listed peers this node is leaving (all at once, at most 0.5 s, shielded), so
        they do not redial it. Streams on open connections still work (leases can be released).
        Idempotent; :meth:`aclose` calls it first, the lifespan may call it earlier."""
        if self._closing:
            return
        self._closing = True
        for scope in list(self._services):
            scope.cancel()
        await self.connections.say_leaving()

    async def aclose(self) -> None:
        """Close every channel and the host (listener and connections): call before cancelling."""
        if self._closed:
            return
        self._closed = True
        await self.begin_closing()
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
