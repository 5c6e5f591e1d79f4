"""Peer exchange (``/triomcp/peers/1.0.0``): both halves, and the loop that asks now and then.

The dialer sends ``{addrs}`` (its listen multiaddrs); the listener answers
``{peers: [{peer_id, addrs}]}`` (its connected, listed peers whose addresses it can vouch for);
one frame each way. On an inbound connection libp2p knows only the dialer's ephemeral port, so a
node tells its peers its listen addresses itself. With a bootstrap address alone, every node of a
mesh comes to know every other node it authorizes.

Only authorized peers are answered, only listed peers are told about or dialed, and every list
read from the network is capped.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import trio

from triomcp.errors import ConfigError, PeerError
from triomcp.p2p._errors import close_quietly, map_libp2p_errors
from triomcp.p2p.discovery import peer_id_in
from triomcp.p2p.framing import FrameDecoder, FrameIssue, encode_frame
from triomcp.p2p.rpc import Stream

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from triomcp.p2p.node import Node

__all__ = ["PEERS_PROTOCOL", "PeerExchange", "read_one_frame"]

log = logging.getLogger("triomcp.p2p")

PEERS_PROTOCOL = "/triomcp/peers/1.0.0"
PEERS_MAX_BYTES = 256 * 1024
PEERS_MAX_ENTRIES = 256
ADDRS_PER_PEER = 8
PEER_EXCHANGE_REFRESH = 10.0


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

    def view(self, asker: str) -> list[dict[str, Any]]:
        """The connected, listed peers (with addresses we can vouch for) we tell ``asker`` about."""
        node = self._node
        out = []
        for peer in node.connected_peers():
            addrs = self.announced.get(peer)
            if peer != asker and addrs and node.authorized.is_listed(peer):
                out.append({"peer_id": peer, "addrs": addrs})
        return out

    async def serve(self, stream: INetStream) -> None:
        """Answer a peer exchange: only to authorized peers; nothing escapes into the host."""
        node = self._node
        try:
            peer_id = stream.muxed_conn.peer_id.to_base58()
            if not node.authorized.is_authorized(peer_id):
                return
            with trio.fail_after(node.settings.stream_timeout):
                hello = await read_one_frame(stream, PEERS_MAX_BYTES)
            addrs = [a for a in hello.get("addrs", []) if isinstance(a, str) and a.endswith(f"/p2p/{peer_id}")]
            if addrs:
                self.announced[peer_id] = addrs[:ADDRS_PER_PEER]
                await node._remember(peer_id, addrs[:ADDRS_PER_PEER])
            with trio.fail_after(node.settings.stream_timeout):
                await stream.write(encode_frame({"peers": self.view(peer_id)}))
        except Exception as exc:
            log.debug("peer exchange with a peer failed: %s", exc)
        finally:
            await close_quietly(stream)

    async def ask(self, peer_id: str) -> list[str]:
        """Tell ``peer_id`` our addresses, learn its peers, dial the ones we authorize; returns those dialed."""
        node = self._node
        stream = await node._open_stream(peer_id, PEERS_PROTOCOL)
        try:
            with map_libp2p_errors(f"exchanging peers with {peer_id}"), trio.fail_after(node.settings.call_timeout):
                await stream.write(encode_frame({"addrs": node.listen_addrs()}))
                answer = await read_one_frame(stream, PEERS_MAX_BYTES)
        finally:
            await close_quietly(stream)
        dialed = []
        for entry in answer.get("peers", [])[:PEERS_MAX_ENTRIES]:
            other = entry.get("peer_id") if isinstance(entry, dict) else None
            if (not isinstance(other, str) or other == node.peer_id or node.is_connected(other)
                    or not node.authorized.is_listed(other)):
                continue
            addrs = [a for a in entry.get("addrs", []) if isinstance(a, str)][:ADDRS_PER_PEER]
            if await self._dial_one_of(other, addrs):
                dialed.append(other)
        return dialed

    async def _dial_one_of(self, peer_id: str, addrs: list[str]) -> bool:
        for addr in addrs:
            try:
                if peer_id_in(addr) != peer_id:
                    continue
                await self._node.connect(addr)
                return True
            except (PeerError, ConfigError) as exc:
                log.debug("peer exchange: %s unreachable at %s: %s", peer_id, addr, exc)
        return False

    async def run(self) -> None:
        """Ask each newly connected listed peer for its peers, and one of them again now and then."""
        node = self._node
        asked: dict[str, float] = {}
        while True:
            with trio.move_on_after(random.uniform(0.5, 1.5) * PEER_EXCHANGE_REFRESH):
                await node.wait_peers_changed()
            now = trio.current_time()
            connected = [p for p in node.connected_peers() if node.authorized.is_listed(p)]
            fresh = [p for p in connected if p not in asked]
            stale = [p for p in connected if now - asked.get(p, now) >= PEER_EXCHANGE_REFRESH]
            for peer in fresh + random.sample(stale, min(1, len(stale))):
                asked[peer] = now
                try:
                    dialed = await self.ask(peer)
                    if dialed:
                        log.info("peer exchange with %s: connected to %d more peers", peer[:16], len(dialed))
                except (PeerError, ConfigError) as exc:
                    log.debug("peer exchange with %s failed: %s", peer, exc)
            for peer in list(asked):
                if peer not in connected:
                    del asked[peer]
