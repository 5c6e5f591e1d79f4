"""Onto the direct connection: once a peer has a direct connection beside a relayed one (DCUtR
punched a hole, or a direct dial succeeded after a relayed one), its calls move to the direct
connection at once, and the relayed one is closed.

Why this is needed (read in py-libp2p 0.8.1, measured in ``tests/p2p/test_direct.py``):
``Swarm.new_stream`` already opens every new stream on the peer's best connection
(``_select_connection`` -> ``_best_connection``: direct before relayed, then more streams), so the
library's choice of connection is right. But a stream stays on the connection it was opened on,
and the streams that carry calls here live long: one MCP stream per peer (``rpc.PeerChannel``) and
the pooled HTTP ones (``http.HttpStreams``, reused for 20 s after each request). DCUtR itself
closes the relayed connection only 60 s after the upgrade (``dcutr.RELAY_CLOSE_GRACE_PERIOD``, and
only on the side that initiated): until then every call took the relay.

What :class:`MoveToDirect` does, on each node, once per relayed connection that has a direct one
beside it (event-driven: the node's connection changes, ``Node.next_peers_change``, and stream
ends, ``Node.next_stream_end``, both signalled by ``host.py``'s notifee):

- retires the peer's MCP stream (the next call opens a new one, which lands on the direct
  connection; the old one is closed once the calls sent on it are answered) and drops the idle
  pooled HTTP streams to the peer (those carrying a request are closed once it ends);
- closes the relayed connection once no stream but gossip's is open on it, or after
  ``p2p.call_timeout`` (a call in flight on it has had its whole timeout; a stream that would stay
  forever, a relayed SSE stream say, does not keep the relay's circuit). Pubsub's own stream to the
  peer ended with it: it is opened again at once (on the direct connection), not at its next write.

The peer does the same on its side; a peer without this module closes nothing, so ours closes the
connection once its own streams are gone, bounded the same way. ``p2p_status`` ->
``relay.to_direct`` counts both outcomes; ``p2p_peers`` shows each connection's open streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from triomcp.p2p.gossip import GOSSIP_PROTOCOLS

if TYPE_CHECKING:
    from triomcp.p2p.node import Node

__all__ = ["MoveToDirect", "MoveToDirectStatistics"]

log = logging.getLogger("triomcp.p2p")

RECHECK_SECONDS = 0.5
"""Between stream events, how often a relayed connection being moved off is looked at again: a
stream's protocol is set when its negotiation ends, and py-libp2p 0.8.1 tells no notifee of that
(a stream still negotiating counts as in use; a gossip stream that turns out to be one does not)."""


@dataclass(frozen=True)
class MoveToDirectStatistics:
    closed: int
    """Relayed connections closed once nothing used them, after a direct one to their peer appeared."""
    cut: int
    """... closed at ``p2p.call_timeout`` with streams still open on them."""


class MoveToDirect:
    """Moves a peer's calls from its relayed connection to a direct one, then closes the relayed one."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._moving: set[int] = set()
        """Ids of the relayed connections being moved off (each once, while it lasts)."""
        self._closed = self._cut = 0

    # -- moving --------------------------------------------------------------------------------
    def _to_move(self) -> list[tuple[str, Any]]:
        """(peer, relayed connection) for each relayed connection with a direct one beside it."""
        circuits = self._node.circuits
        out = []
        for peer in self._node.connected_peers():
            conns = circuits.connections_of(peer)
            relayed = [c for c in conns if circuits.relay_through(c) is not None]
            if relayed and len(relayed) < len(conns):
                out += [(peer, c) for c in relayed if id(c) not in self._moving]
        return out

    @staticmethod
    def _unused(conn: Any) -> bool:
        """Closed, or no stream open on it but gossip's (which is opened again once it closes)."""
        try:
            return bool(conn.is_closed) or all(s.get_protocol() in GOSSIP_PROTOCOLS for s in conn.get_streams())
        except Exception:
            return True

    async def move(self, peer: str, conn: Any) -> None:
        """Move ``peer``'s calls off ``conn`` (relayed) and close it once unused, or at the bound."""
        node = self._node
        log.info("direct connection to %s: calls move off its relayed one", peer)
        await node.renew_streams(peer)
        with trio.move_on_after(node.settings.call_timeout):
            while True:
                ended = node.next_stream_end()
                if self._unused(conn):
                    break
                with trio.move_on_after(RECHECK_SECONDS):
                    await ended.wait()
        if self._unused(conn):
            self._closed += 1
        else:
            self._cut += 1
            log.info("closing the relayed connection to %s with streams still on it (p2p.call_timeout)", peer)
        with trio.CancelScope(shield=True), trio.move_on_after(node.settings.dial_timeout):
            try:
                await conn.close()
            except Exception as exc:
                log.debug("closing the relayed connection to %s: %s", peer[:16], exc)
        if node.gossip is not None:
            node.gossip.reopen(peer)

    async def run(self) -> None:
        """Move each relayed connection that gets a direct one beside it (until cancelled)."""
        node = self._node
        async with trio.open_nursery() as nursery:
            while True:
                changed = node.next_peers_change()
                for peer, conn in self._to_move():
                    self._moving.add(id(conn))
                    nursery.start_soon(self._move_once, peer, conn)
                await changed.wait()

    async def _move_once(self, peer: str, conn: Any) -> None:
        try:
            await self.move(peer, conn)
        except Exception as exc:  # nothing escapes into the node's nursery
            log.warning("moving the calls to %s off its relayed connection: %r", peer[:16], exc)
        finally:
            self._moving.discard(id(conn))

    def statistics(self) -> MoveToDirectStatistics:
        return MoveToDirectStatistics(self._closed, self._cut)
