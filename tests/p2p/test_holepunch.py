"""Hole punching (``p2p/holepunch.py``: py-libp2p's DCUtR, for authorized peers) on 127.0.0.1.

On loopback a relayed peer is also directly reachable, so what DCUtR does here is its first step
(a direct dial to the addresses the peer is known at); the namespace test
(``tests/reliability/test_nat.py``) has the NATs that make it punch. No sleeps: waits look again
every 0.05 s under a ``trio.fail_after``.
"""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from tests.p2p.conftest import authorize, node_in
from triomcp.p2p import Node
from triomcp.p2p.holepunch import DCUTR_PROTOCOL


async def _until_changed(node: Node) -> None:
    with trio.move_on_after(0.05):
        await node.wait_peers_changed()


async def _dcutr_connect(sender: Node, to: Node) -> bytes:
    """Send a DCUtR CONNECT (type 100, no addresses): what came back before the stream ended
    (the reset may come as early as the protocol negotiation, or the write)."""
    try:
        stream = await sender.host.new_stream(ID.from_base58(to.peer_id), [TProtocol(DCUTR_PROTOCOL)])
        await stream.write(b"\x02\x08\x64")
        return await stream.read(64)
    except (StreamEOF, StreamReset, MultiselectClientError, StreamFailure):
        return b""


async def test_a_relayed_connection_to_an_authorized_peer_is_upgraded_to_a_direct_one(tmp_path: Path) -> None:
    punch = {"hole_punch": True}
    async with node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r:
        b_relay = {"use": [r.listen_addrs()[0]], **punch}
        async with node_in(tmp_path / "b", relay=b_relay, peer_exchange=False) as b, \
                node_in(tmp_path / "a", relay=punch, peer_exchange=False) as a:
            authorize(r, a, b)
            authorize(b, a)
            authorize(a, b)
            with trio.fail_after(20):
                while not b.relayed_addrs():
                    await _until_changed(b)
                b.host.get_peerstore().add_addrs(ID.from_base58(a.peer_id), a.host.get_addrs(), 600)
                a.host.get_peerstore().add_addrs(ID.from_base58(b.peer_id), b.host.get_addrs(), 600)
                await a.connect(b.relayed_addrs()[0])
            first = a if a.peer_id < b.peer_id else b
            other = b if first is a else a
            with trio.fail_after(30):  # the node whose id sorts first tries, once
                while first.hole_punch.statistics().upgraded + first.hole_punch.statistics().failed == 0:
                    await _until_changed(first)
            assert first.hole_punch.statistics().upgraded == 1 and first.hole_punch.statistics().attempts == 1
            assert other.hole_punch.statistics().attempts == 0
            kinds = [c["kind"] for c in a.connections_to(b.peer_id)]
            assert "direct" in kinds, kinds
            with trio.fail_after(10):
                assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
            # The relayed connection, unused once the calls moved, is closed on both sides, well
            # before the library's own 60 s (p2p/direct.py; tests/p2p/test_direct.py has the rest).
            with trio.fail_after(10):
                while [c["kind"] for c in a.connections_to(b.peer_id) + b.connections_to(a.peer_id)] != ["direct"] * 2:
                    await _until_changed(a)


async def test_a_hole_punch_from_an_unauthorized_peer_is_refused(tmp_path: Path) -> None:
    async with node_in(tmp_path / "b", relay={"hole_punch": True}, peer_exchange=False) as b, \
            node_in(tmp_path / "c", peer_exchange=False) as c:
        with trio.fail_after(10):
            await c.connect(b.listen_addrs()[0])
            answer = await _dcutr_connect(c, b)
        assert answer == b""  # reset unread: no CONNECT came back
        assert b.hole_punch.statistics().refused == 1
        authorize(b, c)
        with trio.fail_after(10):  # B is alive and answers the next (authorized) peer's call
            assert (await c.call(b.peer_id, "whoami", {}))["peer_id"] == c.peer_id
