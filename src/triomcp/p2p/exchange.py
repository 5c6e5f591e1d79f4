"""Peer exchange (``/triomcp/peers/1.0.0``): both halves, the loop that asks now and then, goodbyes.

The dialer sends ``{addrs}`` (its listen multiaddrs); the listener answers
``{peers: [{peer_id, addrs}], known: [{peer_id, addrs, hops}]}``: ``peers``, its connected, listed
peers whose addresses it can vouch for (each told it them itself); ``known``, a random sample of at
most ``KNOWN_SAMPLE`` listed peers it is not connected to now, each with the addresses that peer
announced and ``hops``, how many exchanges they have travelled since (1: the peer told the
answerer itself). A node passes on what it heard only while ``hops`` < ``KNOWN_HOPS``, so an
address travels at most ``KNOWN_HOPS`` exchanges from the peer that announced it: knowledge
spreads through a mesh whose connections are bounded (a node with ``connections_low`` 3 is
connected to few of its peers at any time, and only the bootstrap node heard from everyone), and
hearsay stays bounded. One frame each way; a node older than ``known`` ignores the field. On an
inbound connection libp2p knows only the dialer's ephemeral port, so a node tells its peers its
listen addresses itself. The asker remembers every listed peer it hears of (``KnownPeers``), and
dials those of ``peers`` (then at most ``KNOWN_DIALS`` of ``known``) only while it has fewer than
``p2p.connections_low`` listed peers connected (connections stay bounded; the others are dialed
on demand).

Bounded connections can leave a mesh in parts not connected to each other, each with the peers it
wants, where no answer tells of a node that joined another part: about every ``VISIT_SECONDS`` a
node with the peers it wants asks one remembered peer it is not connected to, over a connection
it then closes (with a ``TRIMMING`` goodbye). Each visit that teaches it no peer it did not know
doubles that interval, up to ``VISIT_MAX_SECONDS``; one that does, or a peer learnt any other way,
brings it back to ``VISIT_SECONDS``: a visit costs both nodes a connection (Noise, identify,
the exchange both ways, gossip's streams), and a 32-node mesh just formed used three times the
idle CPU with visits every 30 s as with none (docs/performance.md, the latest full run). A node that its peers all trimmed away dials the
other remembered peers again, as at start. Measured in ``bench/discovery.py``
(docs/performance.md, section 10) and ``tests/p2p/test_exchange.py``.

A goodbye is the same first frame with ``{leaving: true}`` (the node is shutting down) or
``{trimming: true}`` (it is about to close this connection to stay within its limits); it is
answered with an empty list, so the sender knows it arrived before it closes. A peer that said
goodbye is not dialed again by the exchange or ``redial_known`` for a while (see ``connections.py``).

A peer is asked only if it serves the protocol: identify tells (its protocol list is in the
peerstore within milliseconds of connecting; a fresh peer is given up to ``IDENTIFY_WAIT`` for it),
and a peer that refused the protocol is not asked again while it stays connected. A client-only
peer (the CLI, a js-libp2p client) is thus asked at most once per connection, and usually never.

Mesh names (``p2p.mesh_name``): a node with a name sends it in both frames (``{mesh}``); a hello
of another mesh (no name is the unnamed mesh) is answered with no peers, its addresses are not
kept, and an answer of another mesh is ignored, so nodes of different meshes never tell each
other of peers even when connected (a shared relay or bootstrap node). Measured against
rendezvous on the mesh name (``bench/discovery.py``, docs/performance.md): connecting takes as
long or less with the exchange alone, so the name is this filter, not a second protocol.

Only authorized peers are answered, only listed peers are told about or dialed, no address is
passed on that is a wildcard, and every list read from the network is capped. A peer with a
relayed address (``<relay>/p2p-circuit/p2p/<peer>``) is dialed by the exchange only from the side
whose peer id sorts first, so two peers that learn of each other at once make one connection.

Size: about 440 lines: both halves of one protocol (what an answer tells, and what an asker keeps
and dials), its goodbyes, its visits and the loop that runs them.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from triomcp.errors import ConfigError, PeerError
from triomcp.p2p._errors import close_quietly, map_libp2p_errors, refused_protocol
from triomcp.p2p.circuit import is_circuit, relay_of
from triomcp.p2p.discovery import is_unspecified, peer_id_in
from triomcp.p2p.framing import FrameDecoder, FrameIssue, encode_frame
from triomcp.p2p.rpc import Stream

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from triomcp.p2p.node import Node

__all__ = ["LEAVING", "PEERS_PROTOCOL", "TRIMMING", "PeerExchange", "read_one_frame"]

log = logging.getLogger("triomcp.p2p")

PEERS_PROTOCOL = "/triomcp/peers/1.0.0"
PEERS_MAX_BYTES = 256 * 1024
PEERS_MAX_ENTRIES = 256
"""Entries read from one answer, ``peers`` and ``known`` together."""
KNOWN_SAMPLE = 16
"""Peers not connected now that one answer tells of (``known``), chosen at random each time."""
KNOWN_HOPS = 3
"""Exchanges an address travels at most from the peer that announced it (``known``'s ``hops``)."""
KNOWN_DIALS = 2
"""Peers of one answer's ``known`` dialed at most, while this node still wants peers."""
VISIT_SECONDS = 30.0
"""About how often (jittered) a node with the peers it wants asks one remembered peer it is not
connected to, over a connection it closes again (:meth:`PeerExchange.visit`), while visits teach it
peers it did not know of."""
VISIT_MAX_SECONDS = 600.0
"""The longest interval between visits, reached by doubling ``VISIT_SECONDS`` after each visit
that taught this node of no new peer."""
ADDRS_PER_PEER = 8
MAX_ADDR_CHARS = 512
"""Longer addresses read from the network are dropped (a relayed one is about 170 characters)."""
PEER_EXCHANGE_REFRESH = 10.0
"""About how often one connected peer is asked again (jittered)."""
WANTING_REFRESH = 1.0
"""The same while this node has fewer listed peers than it wants: doubled after each round that
dialed no one, up to ``PEER_EXCHANGE_REFRESH``."""
IDENTIFY_WAIT = 2.0
"""Seconds a fresh peer's identify may take before the peer is asked anyway (once)."""
IDENTIFY_STEP = 0.1
"""How often the loop looks for identify's answer meanwhile (libp2p signals no event for it)."""
BYE_SECONDS = 0.5
"""All goodbyes of one shutdown, sent at once, take at most this long (a closing node waits on them)."""
TRIM_BYE_SECONDS = 3.0
"""All goodbyes of one trim take at most this long: the trimmer runs in the background, and a
goodbye lost to a busy moment (a stream negotiation, a garbage collection) lets the peer redial."""
LEAVING = "leaving"
TRIMMING = "trimming"


async def read_one_frame(stream: Stream, limit: int) -> dict[str, Any]:
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


class PeerExchange:
    """One node's side of the peer exchange, as listener (:meth:`serve`) and dialer (:meth:`ask`)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.announced: dict[str, list[str]] = {}
        """Listen multiaddrs each peer told us (inbound connections show only the dialer's ephemeral port)."""
        self.heard: dict[str, tuple[list[str], int]] = {}
        """Addresses of listed peers other peers told us of, with the exchanges they travelled
        (``hops``, the fewest heard): one entry per listed peer, passed on while below ``KNOWN_HOPS``."""
        self.refused: dict[str, float | None] = {}
        """Peers that do not serve the protocol, with the start of the connection on which they
        said so (``Node.connected_since``): a new connection is judged anew."""
        self.asks = 0
        """Exchanges this node started (answered or not)."""
        self.served = 0
        """Exchanges this node answered."""
        self.visits = 0
        """Visits this node made (:meth:`visit`: a connection opened to ask, closed again)."""
        self.byes_lost = 0
        """Goodbyes not answered within their bound (the peer may redial sooner than asked)."""
        self.other_mesh = 0
        """Exchanges refused or ignored since start: the peer is of another mesh (``p2p.mesh_name``)."""
        self._byes_out: dict[str, trio.CancelScope] = {}
        """Goodbyes being sent, by peer: one to a peer that says it is leaving too is called off
        (its host may close under the stream's negotiation, which libp2p logs as an ERROR)."""

    def _frame(self, **fields: Any) -> bytes:
        """A frame of this node's, carrying its mesh name if it has one."""
        mesh = self._node.settings.mesh_name
        return encode_frame({**fields, "mesh": mesh} if mesh else fields)

    def _same_mesh(self, frame: dict[str, Any], peer_id: str) -> bool:
        """Is the peer that sent ``frame`` of this node's mesh? (No name is the unnamed mesh.)"""
        theirs, ours = frame.get("mesh", ""), self._node.settings.mesh_name
        if theirs == ours:
            return True
        self.other_mesh += 1
        log.debug("peer %s is of mesh %.64r, this node of %r: no peers exchanged", peer_id[:16], theirs, ours)
        return False

    def view(self, asker: str) -> list[dict[str, Any]]:
        """The connected, listed peers (with addresses we can vouch for) we tell ``asker`` about."""
        node = self._node
        out = []
        for peer in node.connected_peers():
            addrs = self.announced.get(peer)
            if peer != asker and addrs and node.authorized.is_listed(peer):
                out.append({"peer_id": peer, "addrs": addrs})
        return out

    def known_sample(self, asker: str) -> list[dict[str, Any]]:
        """At most ``KNOWN_SAMPLE`` listed peers not in :meth:`view`, at random, with the addresses
        each announced and how far they came: what we tell ``asker`` beside :meth:`view`. Those the
        peer told this node itself (:attr:`announced`, ``hops`` 1 at the asker), and those heard
        from others while they have travelled fewer than ``KNOWN_HOPS`` exchanges; not the asker,
        not a peer that said it is leaving."""
        node = self._node
        told = {entry["peer_id"] for entry in self.view(asker)}
        found = {peer: (addrs, hops) for peer, (addrs, hops) in self.heard.items() if hops < KNOWN_HOPS}
        found.update({peer: (addrs, 0) for peer, addrs in self.announced.items()})
        candidates = [peer for peer, (addrs, _) in found.items()
                      if addrs and peer != asker and peer not in told and node.authorized.is_listed(peer)
                      and node.said_bye(peer) != LEAVING]
        return [{"peer_id": peer, "addrs": found[peer][0], "hops": found[peer][1] + 1}
                for peer in random.sample(candidates, min(KNOWN_SAMPLE, len(candidates)))]

    def _hear(self, peer_id: str, addrs: list[str], hops: int) -> None:
        """Keep what we were told of ``peer_id`` if it came fewer exchanges than what we had."""
        had = self.heard.get(peer_id)
        if had is None or hops <= had[1]:
            self.heard[peer_id] = (addrs, hops)

    def _usable(self, peer_id: str, addrs: Any) -> list[str]:
        """The addresses of ``peer_id`` in ``addrs`` (read from the network) worth keeping: its own
        (``/p2p/<peer_id>``), not a wildcard, not this node's; a relayed one if it names its relay,
        even when that relay is this node (it passes the address on); at most ``ADDRS_PER_PEER``."""
        if not isinstance(addrs, list):
            return []
        suffix = f"/p2p/{peer_id}"
        node = self._node

        def usable(addr: str) -> bool:
            if is_circuit(addr):
                return relay_of(addr) is not None
            return not is_unspecified(addr) and not node.reaches_self(addr)

        return [a for a in addrs if isinstance(a, str) and len(a) <= MAX_ADDR_CHARS and a.endswith(suffix)
                and usable(a)][:ADDRS_PER_PEER]

    async def serve(self, stream: INetStream) -> None:
        """Answer a peer exchange or a goodbye: only to authorized peers; nothing escapes into the host."""
        node = self._node
        try:
            peer_id = stream.muxed_conn.peer_id.to_base58()
            if not node.authorized.is_authorized(peer_id):
                return
            with trio.fail_after(node.settings.stream_timeout):
                hello = await read_one_frame(stream, PEERS_MAX_BYTES)
            bye = LEAVING if hello.get(LEAVING) is True else TRIMMING if hello.get(TRIMMING) is True else None
            if bye is not None:
                node._said_bye(peer_id, bye, id(stream.muxed_conn))
                if bye == LEAVING and peer_id in self._byes_out:
                    self._byes_out[peer_id].cancel()
                with trio.fail_after(node.settings.stream_timeout):
                    await stream.write(encode_frame({"peers": []}))
                return
            if not self._same_mesh(hello, peer_id):
                with trio.fail_after(node.settings.stream_timeout):
                    await stream.write(self._frame(peers=[]))
                return
            addrs = self._usable(peer_id, hello.get("addrs"))
            if addrs:
                self.announced[peer_id] = addrs
                await node._remember(peer_id, addrs)
            with trio.fail_after(node.settings.stream_timeout):
                await stream.write(self._frame(peers=self.view(peer_id), known=self.known_sample(peer_id)))
            self.served += 1
        except Exception as exc:
            log.debug("peer exchange with a peer failed: %s", exc)
        finally:
            await close_quietly(stream)

    async def ask(self, peer_id: str, *, dial: bool = True) -> list[str]:
        """Tell ``peer_id`` our addresses, learn its peers; remember the listed ones and dial them
        while this node has fewer than ``connections_low`` listed peers; returns those dialed.
        ``dial=False`` (refresh rounds): a peer gone since the round began is not dialed back."""
        node = self._node
        self.asks += 1
        stream = await node._open_stream(peer_id, PEERS_PROTOCOL, dial=dial)
        try:
            with map_libp2p_errors(f"exchanging peers with {peer_id}"), trio.fail_after(node.settings.call_timeout):
                await stream.write(self._frame(addrs=node.announced_addrs(ADDRS_PER_PEER)))
                answer = await read_one_frame(stream, PEERS_MAX_BYTES)
        finally:
            await close_quietly(stream)
        if not self._same_mesh(answer, peer_id):
            self.refused[peer_id] = node.connected_since(peer_id)  # not asked again on this connection
            return []
        entries = answer.get("peers")
        entries = entries[:PEERS_MAX_ENTRIES] if isinstance(entries, list) else []
        known = answer.get("known")
        known = known[:PEERS_MAX_ENTRIES - len(entries)] if isinstance(known, list) else []
        learned: list[tuple[str, list[str]]] = []
        heard: list[tuple[str, list[str]]] = []
        for i, entry in enumerate([*entries, *known]):
            other = entry.get("peer_id") if isinstance(entry, dict) else None
            if not isinstance(other, str) or other == node.peer_id or not node.authorized.is_listed(other):
                continue
            hops = entry.get("hops", 1) if i >= len(entries) else 1
            if not isinstance(hops, int) or isinstance(hops, bool) or not 1 <= hops <= KNOWN_HOPS:
                continue
            addrs = self._usable(other, entry.get("addrs"))
            if addrs:
                self._hear(other, addrs, hops)
                await node._remember(other, addrs)
                (learned if i < len(entries) else heard).append((other, addrs))
        dialed = []
        random.shuffle(learned)  # spread the dials of many askers over the peers they hear of
        random.shuffle(heard)
        # The answerer's connected peers first; then at most KNOWN_DIALS of those it knows of (they
        # may be gone): a node whose few peers know of no one else connected still finds the rest.
        for other, addrs in [*learned, *heard[:KNOWN_DIALS]]:
            if not node.wants_peers():
                break
            if node.is_connected(other) or node.said_bye(other) is not None:
                continue
            if node.peer_id > other and any(map(is_circuit, addrs)):
                # Two peers behind relays learn of each other from the relay at about the same time;
                # both dialing would make two relayed connections (two circuits on the relay, which
                # the transport cannot merge). Only the one whose id sorts first dials; the other
                # is dialed, or dials on demand.
                continue
            if await self._dial_one_of(other, addrs):
                dialed.append(other)
        return dialed

    def _peers_known(self) -> set[str]:
        """The peers this node knows of: remembered, heard of, or that announced themselves."""
        node = self._node
        remembered = set(node.known.peers()) if node.known is not None else set()
        return remembered | set(self.heard) | set(self.announced)

    async def visit(self) -> str | None:
        """Ask one remembered, listed peer this node is not connected to, at random, then close
        that connection again (a ``TRIMMING`` goodbye first) unless this node now wants it. With
        connections bounded, the mesh can settle into parts that are not connected to each other
        and each has the peers it wants: no answer within a part tells of a node that joined the
        other, and a visit is what carries it across. Returns the peer asked, or None."""
        node = self._node
        candidates = sorted(p for p in self._peers_known() if p != node.peer_id and not node.is_connected(p) and node.authorized.is_listed(p)
                            and node.said_bye(p) is None)
        if not candidates or node.closing:
            return None
        peer = random.choice(candidates)
        self.visits += 1
        error: str | None = "timed out"
        with trio.move_on_after(2 * node.settings.dial_timeout):
            error = await node.connections.dial_first(peer, node.connections._dial_candidates(peer, ()))
        if error is not None:
            log.debug("peer exchange: visiting %s failed: %s", peer[:16], error)
            return None
        try:
            await self.ask(peer, dial=False)
        except (PeerError, ConfigError) as exc:
            log.debug("peer exchange: visiting %s failed: %s", peer[:16], exc)
        if node.is_connected(peer) and not node.wants_peers() and peer not in node.connections.inflight:
            await self.say_bye([peer], TRIMMING)
            with trio.move_on_after(node.settings.dial_timeout), contextlib.suppress(Exception):
                await node.host.disconnect(ID.from_base58(peer))
        return peer

    async def _dial_one_of(self, peer_id: str, addrs: list[str]) -> bool:
        """Dial ``peer_id`` at its own addresses (direct first, relayed ones after a head start),
        within twice ``p2p.dial_timeout``."""
        own = [a for a in addrs if peer_id_in(a) == peer_id]
        error: str | None = "timed out"
        with trio.move_on_after(2 * self._node.settings.dial_timeout):
            error = await self._node.connections.dial_first(peer_id, own) if own else "no address"
        if error is not None:
            log.debug("peer exchange: %s unreachable at %s: %s", peer_id, ", ".join(own), error)
        return error is None

    async def say_bye(self, peers: list[str], bye: str) -> None:
        """Tell connected ``peers`` goodbye (``LEAVING`` or ``TRIMMING``): all at once, shielded, each
        answered or not within ``BYE_SECONDS`` (``TRIM_BYE_SECONDS``) in all. Never dials, never raises."""
        node = self._node

        async def one(peer: str) -> None:
            with trio.CancelScope() as scope:
                self._byes_out[peer] = scope
                try:
                    stream = await node._open_stream(peer, PEERS_PROTOCOL, dial=False)
                    try:
                        await stream.write(encode_frame({bye: True}))
                        await read_one_frame(stream, PEERS_MAX_BYTES)
                    finally:
                        await close_quietly(stream)
                    delivered.add(peer)
                except Exception as exc:
                    log.debug("goodbye (%s) to %s not delivered: %s", bye, peer[:16], exc)
                finally:
                    self._byes_out.pop(peer, None)
            if scope.cancelled_caught:
                log.debug("goodbye (%s) to %s called off: it is leaving too", bye, peer[:16])

        targets = [p for p in peers if not self._refuses(p) and node.supports(p, PEERS_PROTOCOL) is not False]
        if not targets:
            return
        delivered: set[str] = set()
        with trio.CancelScope(shield=True), trio.move_on_after(TRIM_BYE_SECONDS if bye == TRIMMING else BYE_SECONDS):
            async with trio.open_nursery() as nursery:
                for peer in targets:
                    nursery.start_soon(one, peer)
        self.byes_lost += len(targets) - len(delivered)

    def _trimmed_away(self) -> bool:
        """Did a remembered peer close its connection to this node to stay within its limits?"""
        node = self._node
        return node.known is not None and any(node.said_bye(p) == TRIMMING for p in node.known.peers())

    def _refuses(self, peer: str) -> bool:
        return peer in self.refused and self.refused[peer] == self._node.connected_since(peer)

    def _to_ask(self, connected: list[str], asked: dict[str, tuple[float | None, float]],
                fresh_since: dict[str, float], now: float) -> list[str]:
        """The connected listed peers not asked on their current connection that identify says
        serve the protocol, or whose identify has not answered within ``IDENTIFY_WAIT``; marks
        those that do not serve it."""
        node = self._node
        out = []
        for peer in connected:
            since = node.connected_since(peer)
            if (peer in asked and asked[peer][0] == since) or self._refuses(peer):
                continue
            serves = node.supports(peer, PEERS_PROTOCOL)
            if serves is False:
                log.debug("peer %s does not serve %s: not asking it for peers", peer[:16], PEERS_PROTOCOL)
                self.refused[peer] = since
            elif serves or now - fresh_since.setdefault(peer, now) >= IDENTIFY_WAIT:
                fresh_since.pop(peer, None)
                out.append(peer)
        return out

    async def run(self) -> None:
        """Ask each newly connected listed peer for its peers, and one of them again now and then."""
        node = self._node
        asked: dict[str, tuple[float | None, float]] = {}  # peer -> (its connection's start, when asked)
        fresh_since: dict[str, float] = {}  # connected peers waiting for identify's protocol list
        changed = node.next_peers_change()
        quiet = 0  # rounds in a row that dialed no one
        alone = 0  # rounds in a row that found this node with no listed peer connected
        visit_every = VISIT_SECONDS
        next_visit = trio.current_time() + random.uniform(0.5, 1.5) * visit_every
        peers_known = len(self._peers_known())
        while True:
            period = PEER_EXCHANGE_REFRESH
            if node.wants_peers():
                period = min(PEER_EXCHANGE_REFRESH, WANTING_REFRESH * 2 ** min(quiet, 8))
            with trio.move_on_after(IDENTIFY_STEP if fresh_since else random.uniform(0.5, 1.5) * period):
                await changed.wait()
            changed = node.next_peers_change()  # a change while asking below wakes the next round
            now = trio.current_time()
            connected = [p for p in node.connected_peers() if node.authorized.is_listed(p)]
            for table in (asked, fresh_since, self.refused):
                for peer in [p for p in table if p not in connected]:
                    del table[peer]
            alone = alone + 1 if not connected and self._trimmed_away() else 0
            if alone and (alone - 1) & alone == 0 and node.wants_peers():  # rounds 1, 2, 4, 8, ...
                # Its peers trimmed this node away, so there is no one to ask: the remembered
                # peers that did not are dialed, as at start.
                await node.redial_known()
            fresh = self._to_ask(connected, asked, fresh_since, now)
            stale = [p for p, (_, when) in asked.items() if now - when >= period and p not in fresh
                     and not self._refuses(p)]
            round_ = fresh + random.sample(stale, min(1, len(stale)))
            dialed_any = False
            for peer in round_:
                since = node.connected_since(peer)
                asked[peer] = (since, now)
                try:
                    dialed = await self.ask(peer, dial=False)
                    if dialed:
                        dialed_any = True
                        log.info("peer exchange with %s: connected to %d more peers", peer[:16], len(dialed))
                except (PeerError, ConfigError) as exc:
                    if isinstance(exc, PeerError) and refused_protocol(exc):
                        self.refused[peer] = since
                    log.debug("peer exchange with %s failed: %s", peer, exc)
            if round_:
                quiet = 0 if dialed_any else quiet + 1
            before, peers_known = peers_known, len(self._peers_known())
            if peers_known > before:  # learnt of new peers since the last round (an answer, a peer that asked)
                visit_every = VISIT_SECONDS
                next_visit = min(next_visit, trio.current_time() + random.uniform(0.5, 1.5) * visit_every)
            if trio.current_time() >= next_visit:
                if connected and not node.wants_peers():
                    await self.visit()
                    before, peers_known = peers_known, len(self._peers_known())
                    learnt = peers_known > before
                    visit_every = VISIT_SECONDS if learnt else min(2 * visit_every, VISIT_MAX_SECONDS)
                next_visit = trio.current_time() + random.uniform(0.5, 1.5) * visit_every
