"""Slots reserved on relays, kept alive: how a node that peers cannot dial is reached anyway.

For each relay of ``p2p.relay.use`` (and each bootstrap peer, with ``p2p.relay.use_bootstrap``)
one keeper (:meth:`Reservations.run`) does, for as long as the node runs:

1. connect to the relay if it is not connected (``Node.connect``: ``p2p.dial_timeout``), with
   backoff between failures (full jitter up to 1, 2, 4 ... 60 s);
2. RESERVE on a new HOP stream (py-libp2p's client, ``circuit.Circuits.reserve``), within
   ``p2p.stream_timeout``;
3. hold: the relay's connection is protected from trimming, and the keeper waits for 3/4 of the
   reservation's lifetime (then refreshes it: step 2 again) or for the relay to disconnect (a
   relay that restarted has forgotten it: step 1 again).

A relay that refuses (not authorized there, or full) is asked again after a backoff; a peer that
does not serve circuit relay at all (a bootstrap peer without ``p2p.relay.service``) is asked again
only after its connection has closed and come back.

While a slot is held, the node's addresses (``Node.announced_addrs``) include
``<relay multiaddr>/p2p-circuit/p2p/<this node>``, and whenever that list changes the node tells
its connected listed peers (a peer exchange with each, at once, bounded by ``p2p.call_timeout``):
the relay passes the address on to the peers that ask it, and the mesh announcements carry it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import trio

from triomcp._retry import Backoff
from triomcp.errors import ConfigError, PeerError
from triomcp.p2p._errors import close_quietly, map_libp2p_errors, refused_protocol
from triomcp.p2p.circuit import HOP_PROTOCOL, circuit_addr
from triomcp.p2p.discovery import peer_id_in

if TYPE_CHECKING:
    from triomcp.p2p.node import Node

__all__ = ["REFRESH_AT", "ReservationState", "Reservations"]

log = logging.getLogger("triomcp.p2p")

REFRESH_AT = 0.75
"""A reservation is refreshed when this fraction of its lifetime has passed."""
MIN_HOLD = 1.0
"""Seconds a reservation is held before it is refreshed, at least (whatever the relay says)."""
MAX_HOLD = 3600.0
"""... and at most (a relay's clock far off ours would otherwise have it never refreshed)."""

CONNECTING = "connecting"
RESERVED = "reserved"
REFUSED = "refused"
UNREACHABLE = "unreachable"
NOT_A_RELAY = "not a relay"


@dataclass
class ReservationState:
    """One relay, as ``p2p_status`` shows it."""

    relay: str
    addr: str
    state: str = CONNECTING
    """``connecting``, ``reserved``, ``refused`` (by the relay), ``unreachable``, ``not a relay``."""
    reservations: int = 0
    """Reservations made or refreshed on this relay since start."""
    failures: int = 0
    """Failed attempts in a row."""
    error: str | None = None
    reserved_at: float | None = None
    """When the reservation held now was first made (Trio's clock)."""
    expires_at: float | None = None
    """When the reservation held now expires unless refreshed (Trio's clock)."""


class Reservations:
    """The node's reservations on its relays: one keeper per relay, the addresses they give."""

    def __init__(self, node: Node, relay_addrs: list[str]) -> None:
        self._node = node
        self._states: dict[str, ReservationState] = {}
        for addr in relay_addrs:
            relay = peer_id_in(addr)
            if relay != node.peer_id and relay not in self._states:
                self._states[relay] = ReservationState(relay, addr)
        self._changed = trio.Event()
        """Set when the relayed addresses change: the announcer tells the peers."""
        self.announcements = 0
        """Times this node told its peers its addresses because a reservation began or ended."""

    def addresses_changed(self) -> None:
        """What this node announces changed (its reachability): tell the peers."""
        self._changed.set()

    @property
    def relays(self) -> set[str]:
        return set(self._states)

    def relayed_addrs(self) -> list[str]:
        """This node's addresses through the relays where it holds a slot now."""
        return [circuit_addr(s.addr, self._node.peer_id) for s in self._states.values() if s.state == RESERVED]

    def statistics(self) -> list[dict[str, Any]]:
        """Each relay's state, with ``expires_in``/``held_for`` in seconds instead of clock times."""
        now = trio.current_time()
        out = []
        for state in self._states.values():
            row = asdict(state)
            reserved_at, expires_at = row.pop("reserved_at"), row.pop("expires_at")
            row["held_for"] = None if reserved_at is None else round(now - reserved_at, 1)
            row["expires_in"] = None if expires_at is None else round(expires_at - now, 1)
            out.append(row)
        return out

    async def run(self) -> None:
        """Keep every relay's reservation (until cancelled), and tell the peers when they change."""
        if not self._states:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._announcer)
            for state in self._states.values():
                nursery.start_soon(self._keep, state)

    def _set(self, state: ReservationState, new: str, error: str | None = None) -> None:
        was_reserved = state.state == RESERVED
        state.state, state.error = new, error
        if new != RESERVED:
            state.reserved_at = state.expires_at = None
        if was_reserved != (new == RESERVED):
            self._changed.set()

    async def _keep(self, state: ReservationState) -> None:
        """One relay's keeper; an unexpected error is logged and retried after a backoff, never
        raised (it would stop the node)."""
        backoff = Backoff(base=1.0, cap=60.0)
        with self._node.protect(state.relay):
            while True:
                try:
                    await self._keep_once(state, backoff)
                except Exception as exc:
                    log.exception("keeping the reservation on relay %s failed", state.relay)
                    await self._failed(state, UNREACHABLE, f"{type(exc).__name__}: {exc}", backoff)

    async def _keep_once(self, state: ReservationState, backoff: Backoff) -> None:
        """Connect, reserve and hold until the refresh is due or the relay is gone (then return),
        or until a failure's backoff has passed."""
        node = self._node
        changed = node.next_peers_change()
        if not node.is_connected(state.relay):
            self._set(state, CONNECTING, state.error)
            try:
                await node.connect(state.addr)
            except (PeerError, ConfigError) as exc:
                await self._failed(state, UNREACHABLE, str(exc), backoff)
                return
            changed = node.next_peers_change()
        try:
            seconds = await self._reserve(state.relay)
        except PeerError as exc:
            if refused_protocol(exc):
                self._set(state, NOT_A_RELAY, "it does not serve circuit relay")
                log.info("peer %s does not serve circuit relay: no reservation there", state.relay)
                while node.is_connected(state.relay):  # until its connection closes
                    await changed.wait()
                    changed = node.next_peers_change()
                return
            await self._failed(state, UNREACHABLE, str(exc), backoff)
            return
        if seconds is None:
            await self._failed(state, REFUSED, "the relay refused the reservation", backoff)
            return
        hold = min(MAX_HOLD, max(MIN_HOLD, seconds * REFRESH_AT))
        now = trio.current_time()
        if state.state != RESERVED:
            log.info("reserved a slot on relay %s (%.0f s); reachable at %s", state.relay, seconds,
                     circuit_addr(state.addr, node.peer_id))
            self._set(state, RESERVED)
            state.reserved_at = now
        state.expires_at = now + max(0.0, seconds)
        state.reservations += 1
        state.failures = 0
        with trio.move_on_at(now + hold):
            while node.is_connected(state.relay):
                await changed.wait()
                changed = node.next_peers_change()
        if not node.is_connected(state.relay):
            log.info("lost the connection to relay %s: reserving again once it is back", state.relay)
            self._set(state, CONNECTING)

    async def _failed(self, state: ReservationState, new: str, error: str, backoff: Backoff) -> None:
        state.failures += 1
        self._set(state, new, error)
        delay = backoff.delay(state.failures)
        log.info("no reservation on relay %s (%s: %s); trying again in %.1fs", state.relay, new, error, delay)
        await trio.sleep(delay)

    async def _reserve(self, relay: str) -> float | None:
        """One RESERVE on a new HOP stream: the seconds it lasts, None if refused."""
        node = self._node
        stream = await node._open_stream(relay, HOP_PROTOCOL, dial=False)
        try:
            with map_libp2p_errors(f"reserving a slot on relay {relay}"), trio.fail_after(node.settings.stream_timeout):
                return await node.circuits.reserve(stream, relay)
        finally:
            await close_quietly(stream)

    async def _announcer(self) -> None:
        """Whenever the relayed addresses change, tell the connected listed peers and relays (peer exchange)."""
        node = self._node
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            self.announcements += 1
            peers = [p for p in node.connected_peers() if node.authorized.is_listed(p) or p in self._states]

            async def tell(peer: str) -> None:
                try:
                    await node.exchange_peers(peer)
                except Exception as exc:  # best effort: the periodic exchange tells it later
                    log.debug("could not tell %s this node's addresses: %s", peer[:16], exc)

            with trio.move_on_after(node.settings.call_timeout):
                async with trio.open_nursery() as nursery:
                    for peer in peers:
                        nursery.start_soon(tell, peer)
