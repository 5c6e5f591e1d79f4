"""Hole punching: a relayed connection to an authorized peer is upgraded to a direct one by
py-libp2p 0.8.1's DCUtR (``libp2p.relay.circuit_v2.dcutr``, ``/libp2p/dcutr``), with our rules.

The library does the protocol (CONNECT with each side's observed address, SYNC, both sides dial at
once from their listen port, TCP simultaneous open; a direct dial first, in case the peer is
reachable) and, once a direct connection verifies, closes the relayed one after a grace period
(60 s); ``direct.py`` moves the calls to the direct connection at once and closes the relayed one
as soon as nothing uses it. What this module adds:

- **authorized peers only**: a DCUtR stream from a peer not in ``authorized_peers`` is reset
  unread (the library would dial whatever addresses it is sent); this node initiates only toward
  listed peers. The library's own service loop (which would drive every relayed peer) is not run:
  :meth:`HolePunch.run` decides whom to try;
- **one side tries**: of two peers on a relayed connection, the one whose peer id sorts first
  initiates, once per relayed connection (the library allows 3 attempts per peer and resets them
  when the peer disconnects);
- **deadlines**: each attempt is bounded (``ATTEMPT_SECONDS``), the library's reads and writes by
  ``p2p.stream_timeout``, its dials by ``p2p.dial_timeout``; nothing escapes into the host.

When hole punching fails the relayed connection stays the path; ``p2p_peers`` tells which a
connection is (``circuit.Circuits.connections_to``) and ``p2p_status`` counts attempts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID as DCUTR_ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

from triomcp.p2p._errors import close_quietly

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from triomcp.p2p.node import Node

__all__ = ["DCUTR_PROTOCOL", "HolePunch", "HolePunchStatistics"]

log = logging.getLogger("triomcp.p2p")

DCUTR_PROTOCOL = str(DCUTR_ID)
ATTEMPT_SECONDS = 30.0
"""One hole-punch attempt, the library's three dial rounds and its direct dial first included."""


@dataclass(frozen=True)
class HolePunchStatistics:
    enabled: bool
    attempts: int
    """Hole punches this node began (it initiates toward peers whose id sorts after its own)."""
    upgraded: int
    """... that left a direct connection."""
    failed: int
    """... that did not: the relayed connection stayed the path."""
    refused: int
    """DCUtR streams refused: the peer is not authorized."""


class HolePunch:
    """One node's DCUtR: the library's protocol, mounted for authorized peers, driven here."""

    def __init__(self, node: Node) -> None:
        self._node = node
        settings = node.settings
        self.enabled = settings.relay.hole_punch
        self.protocol = DCUtRProtocol(node.host, read_timeout=max(1, int(settings.stream_timeout)),
                                      write_timeout=max(1, int(settings.stream_timeout)),
                                      dial_timeout=max(1, int(settings.dial_timeout)))
        self._tried: set[tuple[str, int]] = set()
        """(peer, id of the relayed connection) already tried: once per relayed connection."""
        self._attempts = self._upgraded = self._failed = self._refused = 0

    def mount(self) -> None:
        if self.enabled:
            self._node.host.set_stream_handler(DCUTR_ID, self._on_stream)

    async def _on_stream(self, stream: INetStream) -> None:
        """A peer's hole punch: authorized peers only; nothing escapes into the host."""
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            if not self._node.authorized.is_authorized(peer):
                self._refused += 1
                log.info("refused a hole punch from %s: not in authorized_peers", peer)
                await close_quietly(stream, reset=True)
                return
            with trio.fail_after(ATTEMPT_SECONDS), self._node.connections.using(peer):
                await self.protocol._handle_dcutr_stream(stream)
        except Exception as exc:
            log.debug("hole punch stream failed: %r", exc)
        finally:
            await close_quietly(stream)

    def _to_try(self) -> list[tuple[str, int]]:
        node = self._node
        out = []
        connected = node.connected_peers()
        self._tried = {k for k in self._tried if k[0] in connected}  # bounded by the connected peers
        for peer in connected:
            if peer <= node.peer_id or not node.authorized.is_listed(peer):
                continue
            kinds = node.connections_to(peer)
            if not kinds or any(c["kind"] == "direct" for c in kinds):
                continue
            key = (peer, node.circuits.relayed_connection_id(peer))
            if key not in self._tried:
                out.append(key)
        return out

    async def attempt(self, peer: str) -> bool:
        """One hole punch toward ``peer``: is the connection direct afterwards?"""
        self._attempts += 1
        ok = False
        with trio.move_on_after(ATTEMPT_SECONDS), self._node.connections.using(peer):
            try:
                ok = await self.protocol.initiate_hole_punch(ID.from_base58(peer))
            except Exception as exc:
                log.debug("hole punch to %s failed: %r", peer[:16], exc)
        ok = ok and any(c["kind"] == "direct" for c in self._node.connections_to(peer))
        if ok:
            self._upgraded += 1
            log.info("hole punch to %s: direct connection", peer)
        else:
            self._failed += 1
            log.info("hole punch to %s failed: staying on the relay", peer)
        return ok

    async def run(self) -> None:
        """Try each new relayed connection to a listed peer once (until cancelled); once the direct
        one verifies, ``direct.py`` moves the calls to it (the library's own close after 60 s
        finds the relayed one gone, or closes it then)."""
        if not self.enabled:
            return
        node = self._node
        async with trio.open_nursery() as nursery:
            self.protocol._nursery = nursery  # the library schedules its relayed-connection close here
            while True:
                changed = node.next_peers_change()
                for key in self._to_try():
                    self._tried.add(key)
                    nursery.start_soon(self.attempt, key[0])
                await changed.wait()

    def statistics(self) -> HolePunchStatistics:
        return HolePunchStatistics(self.enabled, self._attempts, self._upgraded, self._failed, self._refused)
