"""Circuit relay v2, py-libp2p's own (``libp2p.relay.circuit_v2``), wired into a node: the relay
service for authorized peers, relayed connections accepted only through this node's relays, and
dialing ``<relay>/p2p-circuit/p2p/<peer>`` addresses.

What the library gives (read in py-libp2p 0.8.1, measured in ``tests/p2p/test_circuit.py``):
``CircuitV2Protocol`` answers HOP (``/libp2p/circuit/relay/0.2.0/hop``: RESERVE and CONNECT, a
relay's side) and STOP (``.../stop``: a relayed connection arriving, the destination's side), with
``RelayLimits`` (reservations, their lifetime, the duration and bytes of each relayed connection;
messages over 64 KiB refused); ``CircuitV2Transport`` dials a circuit address (a HOP CONNECT on a
stream to the relay, then Noise and yamux over that stream, so the connection's peer is
authenticated end to end) and makes reservations (``_make_reservation``). What this module adds:

- **HOP for authorized peers only.** A HOP stream from a peer not in ``authorized_peers`` is
  answered PERMISSION_DENIED and closed before the library reads it; reservations are also
  refused, refreshed or used for a peer this node no longer authorizes (``relay_limits.py``'s
  ``RelayReservations``, the library's resource manager with that rule: a RESERVE may name another
  peer id than its sender's). HOP is mounted only with ``p2p.relay.service``; a HOP stream marks its
  peer in use while it lasts, so a relayed connection's two legs are never trimmed.
- **a share per source address**: no one IP address (IPv6 /64) holds more than
  ``p2p.relay.max_reservations_per_source`` reservations or ``max_circuits_per_source`` HOP streams
  at once (``relay_limits.py``); the rest are answered RESOURCE_LIMIT_EXCEEDED.
- **STOP only from our relays.** A relayed connection is accepted only through a relay this node
  reserves on (``p2p.relay.use``, and the bootstrap peers with ``use_bootstrap``); anyone else's
  STOP stream is reset unread. The peer at the far end is then authenticated by Noise and
  authorized like any other: a relay is never a principal, and it cannot speak for anyone.
- **deadlines**: the caller bounds every dial and reservation (``p2p.dial_timeout``,
  ``p2p.stream_timeout``); the library's own reads are bounded (15 s) and its handlers catch
  their own errors, and ours catch whatever is left, so nothing reaches ``host.run()``.
- dials through the library's transport with the CLIENT role off: it would otherwise make a
  reservation on the relay before every dial.

py-libp2p 0.8.1's identify would mangle a circuit address (``get_addrs`` strips the first
``/p2p/`` component it finds, the relay's), so this node's relayed addresses are told to peers by
peer exchange and the mesh announcements only (``Node.announced_addrs``).

Size: a little over 300 lines, a third of them docstrings: one concept (the library's circuit relay
as this node runs it), its three sides (relay, destination, client) and what each connection is.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import multiaddr as ma
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import write_delimited_msg

from triomcp.p2p._errors import close_quietly
from triomcp.p2p.relay_limits import RelayReservations, SourceSlots, stream_source
from triomcp.settings import RelaySettings

__all__ = ["HOP_PROTOCOL", "STOP_PROTOCOL", "Circuits", "RelayServiceStatistics", "circuit_addr", "is_circuit",
           "relay_of"]

log = logging.getLogger("triomcp.p2p")

HOP_PROTOCOL = str(HOP_ID)
STOP_PROTOCOL = str(STOP_ID)
LIBRARY_TIMEOUT = 15
"""Seconds the library's relay reads and writes may take (its own default)."""
ROUTINE = ("Error reading from hop stream", "Unexpected error reading from stream", "Error writing to destination",
           "Failed to fetch stored addresses", "Unexpected error handling hop stream", "Error sending status message",
           "Error sending stop status message", "Timeout reading from hop stream")
"""What py-libp2p 0.8.1's relay code logs as an ERROR or WARNING for the routine end of a stream
(a client closing its HOP stream after a reservation, either end of a relayed connection closing),
or for a first dial of a peer it has no address of: logged at DEBUG instead."""


class _Routine(logging.Filter):
    """Lowers the relay code's :data:`ROUTINE` messages to DEBUG (kept, not dropped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _quiet_routine_ends() -> None:
    for name in ("libp2p.relay.circuit_v2.protocol", "libp2p.relay.circuit_v2.transport"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Routine) for f in logger.filters):
            logger.addFilter(_Routine())


def _carried_by(conn: object, stream: object, depth: int = 6) -> bool:
    """Is ``conn`` (a swarm connection) built on ``stream`` (muxer, security session, raw
    connection, stream: the attributes py-libp2p 0.8.1 keeps them in)?"""
    layer: object = conn
    for _ in range(depth):
        nxt = None
        for name in ("muxed_conn", "secured_conn", "conn", "stream", "_wrapped"):
            candidate = getattr(layer, name, None)
            if candidate is stream:
                return True
            if candidate is not None and nxt is None:
                nxt = candidate
        if nxt is None:
            return False
        layer = nxt
    return False


def is_circuit(multiaddr: str) -> bool:
    """A relayed address (``.../p2p-circuit/...``)."""
    return "/p2p-circuit" in multiaddr


def relay_of(multiaddr: str) -> str | None:
    """The relay's peer id in ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`` (or a relayed
    connection's ``/p2p/<relay>/p2p-circuit/p2p/<peer>``); None if it names none."""
    head, sep, _ = multiaddr.partition("/p2p-circuit")
    relay = head.rpartition("/p2p/")[2] if "/p2p/" in head else ""
    return relay if sep and relay and "/" not in relay else None


def circuit_addr(relay_multiaddr: str, peer_id: str) -> str:
    """The address at which ``peer_id`` is reached through the relay at ``relay_multiaddr``."""
    return f"{relay_multiaddr}/p2p-circuit/p2p/{peer_id}"


@dataclass(frozen=True)
class RelayServiceStatistics:
    service: bool
    """This node serves HOP (``p2p.relay.service``)."""
    reservations: dict[str, float]
    """Peers holding a reservation here, with the seconds it has left."""
    hop_streams: int
    """HOP streams open now: relayed connections being carried, reservations being answered."""
    hop_refused: int
    """HOP streams refused since start: the peer is not authorized."""
    stop_refused: int
    """Relayed connections refused since start: they came through a relay this node does not use."""
    source_refused: int = 0
    """HOP streams and reservations refused since start because their source address had its share
    (``p2p.relay.max_circuits_per_source``, ``max_reservations_per_source``; ``relay_limits.py``)."""
    by_source: dict[str, int] | None = None
    """Reservations held here now, by the source address they were made from."""


class Circuits:
    """One node's circuit relay v2: the library's protocol and transport, mounted with our rules."""

    def __init__(self, host: IHost, settings: RelaySettings, *, is_authorized: Callable[[str], bool],
                 using: Callable[[str], contextlib.AbstractContextManager[None]]) -> None:
        self.host = host
        self.settings = settings
        self._is_authorized = is_authorized
        self._using = using
        limits = RelayLimits(duration=settings.circuit_duration, data=settings.circuit_bytes,
                             max_circuit_conns=settings.max_circuits_per_peer,
                             max_reservations=settings.max_reservations, reservation_ttl=settings.reservation_ttl)
        self.protocol = CircuitV2Protocol(host, limits=limits, allow_hop=settings.service,
                                          read_timeout=LIBRARY_TIMEOUT, write_timeout=LIBRARY_TIMEOUT,
                                          close_timeout=LIBRARY_TIMEOUT)
        self._reservations = RelayReservations(limits, host, is_authorized,
                                               max_per_source=settings.max_reservations_per_source)
        self._slots = SourceSlots(settings.max_circuits_per_source)
        self.protocol.resource_manager = self._reservations
        self.transport = CircuitV2Transport(host, self.protocol, RelayConfig(roles=RelayRole.STOP, limits=limits))
        self.relays: set[str] = set()
        """The relays through which relayed connections are accepted (those this node reserves on)."""
        self._hop_streams = 0
        self._hop_refused = 0
        self._stop_refused = 0
        self._source_refused = 0

    def mount(self) -> None:
        """Set the STOP handler, and HOP's with ``p2p.relay.service``."""
        _quiet_routine_ends()
        self.host.set_stream_handler(STOP_ID, self._on_stop)
        if self.settings.service:
            self.host.set_stream_handler(HOP_ID, self._on_hop)

    # -- the relay's side ----------------------------------------------------------------------
    async def _on_hop(self, stream: INetStream) -> None:
        """A HOP stream (RESERVE or CONNECT): authorized peers only; nothing escapes into the host."""
        try:
            peer_id = stream.muxed_conn.peer_id.to_base58()
            if not self._is_authorized(peer_id):
                self._hop_refused += 1
                log.info("refused circuit relay to %s: not in authorized_peers", peer_id)
                await self._refuse(stream, StatusCode.PERMISSION_DENIED)
                return
            source = stream_source(stream)
            with self._slots.hold(source) as admitted:
                if not admitted:
                    self._source_refused += 1
                    log.info("refused circuit relay to %s: %d HOP streams from %s open already "
                             "(p2p.relay.max_circuits_per_source)", peer_id, self._slots.max_per_source, source)
                    await self._refuse(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED)
                    return
                self._hop_streams += 1
                try:
                    with self._using(peer_id):  # both legs of a relayed connection are in use while it lasts
                        await self.protocol._handle_hop_stream(stream)
                finally:
                    self._hop_streams -= 1
        except Exception as exc:
            log.debug("circuit relay stream failed: %r", exc)
        finally:
            await close_quietly(stream)

    @staticmethod
    async def _refuse(stream: INetStream, status: StatusCode) -> None:
        """Answer a HOP stream with ``status``, unread (the caller closes it)."""
        with trio.move_on_after(LIBRARY_TIMEOUT):
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS, status=to_proto_status(status)))

    def reservations_held(self) -> dict[str, float]:
        """Peers holding a reservation on this node, with the seconds it has left."""
        return self._reservations.held() if self.settings.service else {}

    def holds_reservation(self, peer_id: str) -> bool:
        if not self.settings.service:
            return False
        try:
            return self._reservations.get_reservation(ID.from_base58(peer_id)) is not None
        except Exception:
            return False

    # -- the destination's side ----------------------------------------------------------------
    async def _on_stop(self, stream: INetStream) -> None:
        """A relayed connection arriving: only through one of this node's relays."""
        try:
            relay = stream.muxed_conn.peer_id.to_base58()
            if relay not in self.relays:
                self._stop_refused += 1
                log.info("refused a relayed connection through %s: not a relay this node uses", relay)
                await close_quietly(stream, reset=True)
                return
            await self.protocol._handle_stop_stream(stream)
            self._name_relay(stream, relay)
        except Exception as exc:
            log.debug("relayed connection not accepted: %r", exc)
            await close_quietly(stream, reset=True)

    def _name_relay(self, stream: INetStream, relay: str) -> None:
        """py-libp2p 0.8.1 records a relayed connection that arrived as coming through this node
        itself (``/p2p/<own id>/p2p-circuit/...``): record the relay that carried it."""
        from libp2p.connection_types import ConnectionType

        for peer, conns in list(getattr(self.host.get_network(), "connections", {}).items()):
            for conn in conns if isinstance(conns, list) else [conns]:
                if _carried_by(conn, stream):
                    conn.set_transport_info([ma.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer.to_base58()}")],
                                            ConnectionType.RELAYED)
                    return

    # -- what a connection is ------------------------------------------------------------------
    def connections_of(self, peer_id: str) -> list[Any]:
        """The swarm's open connections to ``peer_id`` (py-libp2p's ``SwarmConn`` objects)."""
        try:
            return list(getattr(self.host.get_network(), "connections", {}).get(ID.from_base58(peer_id)) or [])
        except Exception:
            return []

    @staticmethod
    def relay_through(conn: Any) -> str | None:
        """The relay a connection runs through (``"unknown"`` if it does not say which), None if direct."""
        from libp2p.connection_types import ConnectionType

        try:
            addrs = [str(a) for a in conn.get_transport_addresses()]
            relayed = conn.get_connection_type() == ConnectionType.RELAYED or any(map(is_circuit, addrs))
        except Exception:
            return None
        return next((r for r in map(relay_of, addrs) if r is not None), "unknown") if relayed else None

    def connections_to(self, peer_id: str) -> list[dict[str, Any]]:
        """Each open connection to ``peer_id``: ``{"kind": "direct", "addr": ..., "streams": n}`` or
        ``{"kind": "relayed", "relay": <relay peer id>, "streams": n}``, ``streams`` the streams
        open on it now (long-lived MCP and gossip streams, pooled HTTP ones, those being served)."""
        out: list[dict[str, Any]] = []
        for conn in self.connections_of(peer_id):
            try:
                streams = len(conn.get_streams())
            except Exception:
                streams = 0
            relay = self.relay_through(conn)
            if relay is not None:
                out.append({"kind": "relayed", "relay": relay, "streams": streams})
                continue
            try:
                addrs = [str(a) for a in conn.get_transport_addresses()]
            except Exception:
                addrs = []
            out.append({"kind": "direct", "addr": addrs[0] if addrs else "unknown", "streams": streams})
        return out

    def relayed_connection_id(self, peer_id: str) -> int:
        """An id of the first relayed connection to ``peer_id`` (0 if none): tells one from the next."""
        return next((id(c) for c in self.connections_of(peer_id) if self.relay_through(c) is not None), 0)

    def relays_in_use(self, peers: set[str]) -> set[str]:
        """The relays that the relayed connections to ``peers`` run through."""
        return {c["relay"] for p in peers for c in self.connections_to(p) if c["kind"] == "relayed"}

    # -- the client's side ---------------------------------------------------------------------
    async def dial(self, multiaddr: str) -> None:
        """Connect through the relay named in ``multiaddr`` (the caller owns the deadline)."""
        await self.transport.dial(ma.Multiaddr(multiaddr))

    async def reserve(self, stream: INetStream, relay_id: str) -> float | None:
        """RESERVE on a HOP stream to ``relay_id``: the seconds the reservation lasts, or None if the
        relay refused it (the caller owns the deadline and the stream)."""
        relay = ID.from_base58(relay_id)
        if not await self.transport._make_reservation(stream, relay):
            return None
        expires = self.transport._reservations.get(relay, 0)
        return float(expires) - time.time()

    def statistics(self) -> RelayServiceStatistics:
        return RelayServiceStatistics(self.settings.service, self.reservations_held(), self._hop_streams,
                                      self._hop_refused, self._stop_refused,
                                      self._source_refused + self._reservations.refused_by_source,
                                      self._reservations.held_by_source() if self.settings.service else {})
