"""A node's connections: which are in use, protected or young, who said goodbye, the trimmer, dials on demand.

Connections are bounded (``p2p.connections_low`` / ``connections_high``): peer exchange dials
only while fewer than ``connections_low`` listed peers are connected (:meth:`Connections.wants_peers`),
the trimmer (:meth:`Connections.run_trimmer`, event-driven) closes connections above
``connections_high`` down to ``connections_low`` (sparing bootstrap peers, peers
:meth:`Connections.protect`-ed or with requests in flight either way, and connections younger than
``trim_grace``; least recently used first), and :meth:`Connections.ensure_connected` dials an
owner on demand. Which connections to close is a pure function (``discovery.pick_trims``); this
module keeps what it decides on and carries the decision out. py-libp2p 0.8.1's own pruner
(``ConnectionPruner``) is not used (``host.py`` sets its watermark out of reach): it spares every
connection with an open stream, and each peer keeps a long-lived MCP stream (and pooled HTTP
ones), so it would never trim; it counts this node's own CLI and front-end connections like any
other; and it cannot tell a request in flight from an idle stream.

Goodbyes (sent and heard by ``exchange.py``): a peer that said it is leaving is not dialed for
``LEAVING_HOLD`` seconds, one that trimmed our connection not redialed by the exchange or a
bootstrap loop for ``TRIM_HOLD``, unless it connects again first; a closing mesh node tells its
connected listed peers it is leaving (:meth:`Connections.say_leaving`), so they do not redial it.

Dialing a peer at several addresses (:meth:`Connections.dial_first`): its direct addresses first,
its relayed ones (``<relay>/p2p-circuit/p2p/<peer>``) from ``RELAY_HEAD_START`` on; the relays that
relayed connections run through, and peers holding a reservation on this relay, are never trimmed.

The :class:`~triomcp.p2p.node.Node` owns one :class:`Connections` (``node.connections``) and keeps
its methods under the same names (``node.protect``, ``node.trim``, ...); the host's notifee
reports each connection opened or closed (:meth:`Connections.on_connection`).

Size: a little over 300 lines: one concept (which connections a node keeps, and how it makes them
on demand), the trimmer and the dialing policy each a few short methods.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

from triomcp.errors import ConfigError, PeerError
from triomcp.p2p.circuit import is_circuit, relay_of
from triomcp.p2p.discovery import PeerUse, peer_id_in, pick_trims
from triomcp.p2p.exchange import LEAVING, TRIMMING

if TYPE_CHECKING:
    from triomcp.p2p.node import Node

__all__ = ["LEAVING_HOLD", "LEAVING_REDIAL", "RELAY_HEAD_START", "TRIM_GRACE", "TRIM_HOLD", "Connections"]

log = logging.getLogger("triomcp.p2p")

DIALED_KEPT = 1024
"""Peers whose last explicitly dialed address (``Node.connect``) a node keeps in memory."""
TRIM_GRACE = 10.0
"""Seconds a new connection is never trimmed (``Connections.trim_grace``)."""
LEAVING_HOLD = 15.0
"""Seconds a peer that said it is leaving is not dialed (by the exchange, ``redial_known``,
``ensure_connected``), unless it connects again first."""
TRIM_HOLD = 60.0
"""Seconds a peer that trimmed our connection is not redialed by the exchange or a bootstrap loop."""
LEAVING_REDIAL = 5.0
"""A bootstrap peer that said it is leaving is first redialed after 5 to 7.5 s (jitter)."""
RELAY_HEAD_START = 0.5
"""Seconds a peer's direct addresses are dialed alone before its relayed ones are dialed too
(go-libp2p waits as long): a peer on the same network is reached directly, one behind NAT
without waiting for every direct dial to time out."""


@dataclass
class _Bye:
    bye: str
    at: float
    conn: int | None = None
    """``id()`` of the muxed connection it came on: that connection's own "opened" event, which
    libp2p may report after the peer has already used it, does not end the goodbye."""
    paused: bool = False
    """A reconnect loop has already waited on it once."""


class Connections:
    """The bookkeeping of one node's connections, its trimmer and its dials on demand."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._connected_at: dict[str, float] = {}
        self._last_used: dict[str, float] = {}
        self._inflight: Counter[str] = Counter()
        self._protected: Counter[str] = Counter()
        self._byes: dict[str, _Bye] = {}
        """Peers that said goodbye (leaving, or trimming our connection), until they connect again."""
        self._bootstrap_ids: set[str] = set()
        for addr in node.settings.bootstrap:
            with contextlib.suppress(ConfigError):
                self._bootstrap_ids.add(peer_id_in(addr))
        self.trim_grace = TRIM_GRACE
        """Seconds a new connection is never trimmed (tests shorten it)."""
        self.trimmed = 0
        """Connections closed to stay within ``p2p.connections_high`` since the node started."""
        self.on_demand_dials = 0
        """Dials to peers not connected when they were needed (``ensure_connected``, a call, a stream)."""
        self.opened = 0
        """Connections opened since the node started, either way (libp2p's notifee)."""
        self._dialed: OrderedDict[str, str] = OrderedDict()
        """The address each peer was last reached at by an explicit dial (at most ``DIALED_KEPT``,
        the least recent dropped): a node without a peers file (a client, a CLI host) remembers
        nothing else once libp2p's peerstore lets the address expire (120 s after the dial), so a
        peer that trimmed its connection could not be dialed again on demand."""

    # -- connected, in use, protected --------------------------------------------------------
    def on_connection(self, peer_id: str, *, opened: bool, conn: int | None = None) -> None:
        """A connection to ``peer_id`` opened or closed (the host's notifee, through the node)."""
        now = trio.current_time()
        if opened:
            self.opened += 1
            self._connected_at[peer_id] = now
            bye = self._byes.get(peer_id)
            if bye is not None and (conn is None or bye.conn != conn):
                del self._byes[peer_id]  # it is back (or never left)
        elif not self._node.is_connected(peer_id):
            self._connected_at.pop(peer_id, None)
            self._last_used.pop(peer_id, None)

    def connected_since(self, peer_id: str) -> float | None:
        """When the connection to ``peer_id`` opened (Trio's clock), if it is connected."""
        return self._connected_at.get(peer_id) if self._node.is_connected(peer_id) else None

    def wants_peers(self) -> bool:
        """Fewer than ``p2p.connections_low`` listed peers connected: the exchange may dial more."""
        node = self._node
        listed = sum(1 for p in node._connected() if node.authorized.is_listed(p))
        return listed < node.settings.connections_low

    @property
    def inflight(self) -> Mapping[str, int]:
        """Requests in flight to or from each peer (only peers with some)."""
        return self._inflight

    def using(self, peer_id: str) -> contextlib.AbstractContextManager[None]:
        """A request to or from ``peer_id`` is in flight: its connection is not trimmed meanwhile."""
        return self._held(self._inflight, peer_id)

    def protect(self, peer_id: str) -> contextlib.AbstractContextManager[None]:
        """While in this block, the connection to ``peer_id`` is never trimmed (nested uses count:
        the mesh holds it while it runs a task leased from that owner)."""
        return self._held(self._protected, peer_id)

    @contextlib.contextmanager
    def _held(self, counts: Counter[str], peer_id: str) -> Iterator[None]:
        counts[peer_id] += 1
        self._last_used[peer_id] = trio.current_time()
        try:
            yield
        finally:
            counts[peer_id] -= 1
            if counts[peer_id] <= 0:
                del counts[peer_id]
            self._last_used[peer_id] = trio.current_time()

    # -- goodbyes ------------------------------------------------------------------------------
    def heard_bye(self, peer_id: str, bye: str, conn: int | None = None) -> None:
        """``peer_id`` said goodbye (``exchange.LEAVING`` or ``TRIMMING``) on connection ``conn``."""
        log.debug("peer %s said goodbye: %s", peer_id[:16], bye)
        self._byes[peer_id] = _Bye(bye, trio.current_time(), conn)

    def said_bye(self, peer_id: str) -> str | None:
        """``LEAVING`` or ``TRIMMING`` while that goodbye holds (it is not dialed then), else None."""
        bye = self._byes.get(peer_id)
        if bye is None:
            return None
        if trio.current_time() - bye.at >= (LEAVING_HOLD if bye.bye == LEAVING else TRIM_HOLD):
            del self._byes[peer_id]
            return None
        return bye.bye

    def redial_pause(self, peer_id: str) -> tuple[float, str] | None:
        """For a reconnect loop (``keep_connected``'s ``pause``): once per goodbye, how long to wait
        before redialing the peer that said it, and why; None to redial at once."""
        bye = self._byes.get(peer_id)
        if bye is None or bye.paused or self.said_bye(peer_id) is None:
            return None
        bye.paused = True
        if bye.bye == LEAVING:
            return LEAVING_REDIAL * random.uniform(1.0, 1.5), "said it is leaving"
        remaining = TRIM_HOLD - (trio.current_time() - bye.at)
        return max(0.0, remaining) * random.uniform(1.0, 1.25), "closed our connection to stay within its limits"

    async def say_leaving(self) -> None:
        """A mesh node that begins closing tells its connected listed peers it is leaving (all at
        once, at most ``exchange.BYE_SECONDS``, shielded), so they do not redial it."""
        node = self._node
        if node.in_mesh:  # not to those leaving too: their connections may be closing under the goodbye
            await node.exchange.say_bye([p for p in node.connected_peers() if node.authorized.is_listed(p)
                                         and self.said_bye(p) != LEAVING], LEAVING)

    # -- dialing on demand ---------------------------------------------------------------------
    async def ensure_connected(self, peer_id: str, addrs: Sequence[str] = ()) -> None:
        """Connect to ``peer_id`` unless it is connected: at ``addrs`` (those ending in
        ``/p2p/<peer_id>``), then at the addresses the peerstore and ``KnownPeers`` have for it;
        each dial bounded by ``p2p.dial_timeout``, all of them by twice that. Only a peer listed in
        ``authorized_peers`` is dialed. PeerError when it cannot be reached (or this node is
        closing, or the peer said it is leaving)."""
        if self._node.is_connected(peer_id):
            return
        if not self._node.authorized.is_listed(peer_id):
            raise PeerError(f"owner {peer_id} is not listed in authorized_peers: not dialing it")
        await self.dial_on_demand(peer_id, addrs, what="owner")

    def dialed(self, peer_id: str, addr: str) -> None:
        """``addr`` reached ``peer_id`` (``Node.connect``): kept for dials on demand."""
        self._dialed[peer_id] = addr
        self._dialed.move_to_end(peer_id)
        while len(self._dialed) > DIALED_KEPT:
            self._dialed.popitem(last=False)

    def _dial_candidates(self, peer_id: str, addrs: Sequence[str]) -> list[str]:
        node = self._node
        suffix = f"/p2p/{peer_id}"
        found = [a for a in addrs if a.endswith(suffix)]
        with contextlib.suppress(Exception):
            stored = node.host.get_peerstore().addrs(ID.from_base58(peer_id))
            found += [s if s.endswith(suffix) else f"{s}{suffix}" for s in (str(a) for a in stored)]
        if peer_id in self._dialed:
            found.append(self._dialed[peer_id])
        if node.known is not None:
            found += node.known.addrs(peer_id)
        return [a for a in dict.fromkeys(found) if self._dialable(a)]

    def _dialable(self, addr: str) -> bool:
        """Not this node, and a relayed address only if it names a relay other than this node (the
        library stores circuits without the relay's id, which can never be dialed)."""
        node = self._node
        if is_circuit(addr):
            relay = relay_of(addr)
            return relay is not None and relay != node.peer_id and addr.rpartition("/p2p/")[2] != node.peer_id
        return not node.reaches_self(addr)

    async def dial_first(self, peer_id: str, addrs: Sequence[str]) -> str | None:
        """Dial ``peer_id`` at one of ``addrs``: the direct ones one after another and, from
        ``RELAY_HEAD_START`` seconds on (or once the direct ones have all failed), the relayed ones
        one after another; the first connection wins and the other dial is cancelled. Returns None
        once connected, else the last error. The caller bounds it."""
        node = self._node
        direct = [a for a in addrs if not is_circuit(a)]
        relayed = [a for a in addrs if is_circuit(a)]
        errors: list[str] = []
        connected = False

        async def one_by_one(batch: list[str], after: trio.Event | None, done: trio.Event,
                             scope: trio.CancelScope) -> None:
            nonlocal connected
            try:
                if after is not None:
                    with trio.move_on_after(RELAY_HEAD_START):
                        await after.wait()
                for addr in batch:
                    try:
                        await node.connect(addr)
                    except (PeerError, ConfigError) as exc:
                        errors.append(str(exc))
                        continue
                    connected = True
                    scope.cancel()
                    return
            finally:
                done.set()

        direct_done, relayed_done = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            if direct:
                nursery.start_soon(one_by_one, direct, None, direct_done, nursery.cancel_scope)
            else:
                direct_done.set()
            if relayed:
                nursery.start_soon(one_by_one, relayed, direct_done, relayed_done, nursery.cancel_scope)
        if connected:
            return None
        return errors[-1] if errors else "timed out"

    async def dial_on_demand(self, peer_id: str, addrs: Sequence[str], *, what: str) -> None:
        """Dial ``peer_id``, not connected, where it may be (``what`` names it in errors)."""
        node = self._node
        if node.closing:
            raise PeerError(f"this node is closing: not dialing {peer_id}")
        if peer_id == node.peer_id:
            raise ConfigError("a node does not dial itself")
        if self.said_bye(peer_id) == LEAVING:  # it is shutting down: a dial would only fail, loudly
            raise PeerError(f"{what} {peer_id} is not reachable: it said it is leaving")
        candidates = self._dial_candidates(peer_id, addrs)
        if not candidates:
            raise PeerError(f"{what} {peer_id} is not reachable: no address of it is known")
        self.on_demand_dials += 1
        last: str | None = "timed out"
        with trio.move_on_after(2 * node.settings.dial_timeout):
            last = await self.dial_first(peer_id, candidates)
        if last is None:
            return
        raise PeerError(f"{what} {peer_id} is not reachable at {', '.join(candidates)}: {last}")

    # -- trimming --------------------------------------------------------------------------------
    def _peer_uses(self) -> list[PeerUse]:
        node = self._node
        now = trio.current_time()
        uses = []
        carrying = node.relays_in_use()  # closing one would close the relayed connections through it
        for peer in node._connected():
            if node.authorized.is_local(peer):  # this node's own CLI and front end: never counted
                continue
            since = self._connected_at.get(peer, now)
            spared = (peer in self._bootstrap_ids or peer in self._protected or peer in self._inflight
                      or peer in carrying or node.circuits.holds_reservation(peer))
            uses.append(PeerUse(peer, since, max(since, self._last_used.get(peer, since)),
                                node.authorized.is_listed(peer), spared))
        return uses

    async def trim(self) -> float | None:
        """Close connections above ``p2p.connections_high`` down to ``connections_low`` (see
        :func:`pick_trims`), telling listed peers first; returns when to look again, or None."""
        node = self._node
        settings = node.settings
        trims, again = pick_trims(self._peer_uses(), now=trio.current_time(), low=settings.connections_low,
                                  high=settings.connections_high, grace=self.trim_grace)
        if not trims:
            return again
        await node.exchange.say_bye([p for p in trims if node.authorized.is_listed(p)], TRIMMING)

        closed: list[str] = []

        async def close(peer: str) -> None:
            if peer in self._inflight or peer in self._protected:  # in use since it was picked
                return
            try:
                with trio.move_on_after(settings.dial_timeout):
                    await node.host.disconnect(ID.from_base58(peer))
                closed.append(peer)
            except Exception as exc:
                log.debug("closing the connection to %s: %s", peer[:16], exc)

        async with trio.open_nursery() as nursery:
            for peer in trims:
                nursery.start_soon(close, peer)
        self.trimmed += len(closed)
        if closed:
            log.info("closed the connections to %d peers to stay within p2p.connections_high (%d)",
                     len(closed), settings.connections_high)
        return again

    async def run_trimmer(self) -> None:
        """Trim whenever the connected peers change (and when a connection's grace period ends)."""
        while True:
            changed = self._node.next_peers_change()
            again = await self.trim()
            with trio.move_on_at(math.inf if again is None else again):
                await changed.wait()
