"""What a relay (``p2p.relay.service``) lets each peer and each source address take.

py-libp2p 0.8.1's relay limits reservations overall (``max_reservations``) and relayed connections
per reservation (``max_circuits_per_peer``), by peer id only: one machine holding many authorized
identities, or a network of machines behind one NAT, could take every slot. Two more caps, by
*source*, the IP address a HOP stream's connection comes from (an IPv4 address, an IPv6 /64:
``admission.source_of``, as for unauthenticated connections):

- ``p2p.relay.max_reservations_per_source``: reservations held at once by peers that reserved from
  one source; more are answered RESOURCE_LIMIT_EXCEEDED (a refresh of a held one always passes);
- ``p2p.relay.max_circuits_per_source``: HOP streams open at once from one source, which is the
  relayed connections it has asked this relay to carry (and reservations being answered); more
  are answered RESOURCE_LIMIT_EXCEEDED before the library reads them.

:class:`RelayReservations` is the library's resource manager with those rules and authorization
(a reservation is refused, not refreshed and not used for a peer this node does not authorize: a
RESERVE may name another peer id than its sender's). The source of the HOP stream being handled
reaches it through a context variable that :class:`Circuits` (``circuit.py``) sets around the
library's handler: the library calls the manager synchronously, in the handler's own task, between
reading the request and answering it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections import Counter
from collections.abc import Callable, Iterator

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.resources import RelayLimits, RelayResourceManager, Reservation

from triomcp.p2p.admission import source_of

__all__ = ["RelayReservations", "SourceSlots", "stream_source"]

_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("triomcp_relay_source", default=None)
"""The source of the HOP stream whose request the library is handling in this task."""


def stream_source(stream: INetStream) -> str:
    """The source (IPv4 address, IPv6 /64) of the connection ``stream`` runs on; ``unknown`` if unsaid."""
    try:
        return source_of(stream.get_remote_address())
    except Exception:
        return "unknown"


class SourceSlots:
    """HOP streams open at once, by source, capped (synchronous: no checkpoint between check and count)."""

    def __init__(self, max_per_source: int) -> None:
        self.max_per_source = max_per_source
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, source: str) -> Iterator[bool]:
        """Take a slot for ``source`` while the block runs: yields False (and takes none) when it is full.
        The block runs with ``source`` as the one :class:`RelayReservations` sees."""
        if self._open[source] >= self.max_per_source:
            yield False
            return
        self._open[source] += 1
        token = _SOURCE.set(source)
        try:
            yield True
        finally:
            _SOURCE.reset(token)
            self._open[source] -= 1
            if self._open[source] <= 0:
                del self._open[source]

    def open_now(self) -> dict[str, int]:
        return dict(self._open)


class RelayReservations(RelayResourceManager):
    """The library's reservations, for authorized peers only, at most ``max_per_source`` per source."""

    def __init__(self, limits: RelayLimits, host: object, is_authorized: Callable[[str], bool], *,
                 max_per_source: int) -> None:
        super().__init__(limits, host)  # type: ignore[arg-type]
        self._is_authorized = is_authorized
        self.max_per_source = max_per_source
        self._sources: dict[ID, str] = {}
        """The source each reservation was made or last refreshed from."""
        self.refused_by_source = 0
        """New reservations refused because their source held ``max_per_source`` already."""

    def _allowed(self, peer_id: ID) -> bool:
        try:
            return self._is_authorized(peer_id.to_base58())
        except Exception:
            return False

    def _held_from(self, source: str) -> int:
        now = time.time()
        return sum(1 for peer, res in self._reservations.items()
                   if res.expires_at >= now and self._sources.get(peer) == source)

    def can_accept_reservation(self, peer_id: ID) -> bool:
        if not self._allowed(peer_id) or not super().can_accept_reservation(peer_id):
            return False
        existing = self._reservations.get(peer_id)
        source = _SOURCE.get()
        if (existing is not None and not existing.is_expired()) or source is None:
            return True
        if self._held_from(source) >= self.max_per_source:
            self.refused_by_source += 1
            return False
        return True

    def reserve(self, peer_id: ID) -> int:
        ttl = super().reserve(peer_id)
        self._remember_source(peer_id)
        return ttl

    def refresh_reservation(self, peer_id: ID) -> int:
        ttl = super().refresh_reservation(peer_id)
        self._remember_source(peer_id)
        return ttl

    def _remember_source(self, peer_id: ID) -> None:
        source = _SOURCE.get()
        if source is not None:
            self._sources[peer_id] = source
        for gone in [p for p in self._sources if p not in self._reservations]:
            del self._sources[gone]

    def has_reservation(self, peer_id: ID) -> bool:
        return self._allowed(peer_id) and super().has_reservation(peer_id)

    def get_reservation(self, peer_id: ID) -> Reservation | None:
        return super().get_reservation(peer_id) if self._allowed(peer_id) else None

    def held(self) -> dict[str, float]:
        """Peers holding a reservation, with the seconds it has left."""
        now = time.time()
        return {peer.to_base58(): round(res.expires_at - now, 1) for peer, res in list(self._reservations.items())
                if self.get_reservation(peer) is not None}

    def held_by_source(self) -> dict[str, int]:
        """Reservations held now, by the source they were made from."""
        now = time.time()
        counts: Counter[str] = Counter(self._sources.get(peer, "unknown") for peer, res in self._reservations.items()
                                       if res.expires_at >= now and self._allowed(peer))
        return dict(counts)
