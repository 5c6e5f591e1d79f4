"""The peer exchange (``/triomcp/peers/1.0.0``: one frame each way): its framing over a memory
stream; between real nodes on 127.0.0.1, discovery from one bootstrap address and mesh names
(more of the exchange between real nodes is in ``test_node.py`` and ``test_connections.py``).
No sleeps: waits wake on connection events, under a ``trio.fail_after``."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
import trio
from pydantic import ValidationError

from tests.p2p.conftest import node_in
from tests.p2p.streams import stream_pair
from tests.p2p.test_connections import mesh, mesh_dirs, until
from triomcp.errors import PeerError
from triomcp.p2p.exchange import read_one_frame
from triomcp.p2p.framing import encode_frame
from triomcp.settings import P2PSettings


async def test_read_one_frame_over_a_memory_stream() -> None:
    for sent, error in [
        (encode_frame({"addrs": ["a"]}) + encode_frame({"ignored": True}), None),
        (encode_frame({"addrs": []})[:5], "ended before a whole frame"),
        (b"\x00\x00\x00\x02[]", "a bad frame"),
        (b"\x00\x00\x10\x00" + b"x" * 4096, "a bad frame"),
    ]:
        mine, theirs = stream_pair()
        await theirs.write(sent)
        await theirs.close()
        with trio.fail_after(5):
            try:
                assert await read_one_frame(mine, 1024) == {"addrs": ["a"]} and error is None
            except PeerError as exc:
                assert error is not None and error in str(exc)


# -- between real nodes: one bootstrap address is enough; mesh names keep meshes apart ------------
FIVE_FIND_EACH_OTHER_WITHIN = 20.0
"""Seconds five loopback nodes may take to find and connect to each other (measured: under 1 s;
bench/discovery.py)."""


def test_a_mesh_name_is_checked() -> None:
    assert P2PSettings().mesh_name == ""
    assert P2PSettings(mesh_name="lab-2.gpu_boxes").mesh_name == "lab-2.gpu_boxes"
    for bad in ("with space", "x" * 65, "ünï"):
        with pytest.raises(ValidationError):
            P2PSettings(mesh_name=bad)


async def test_five_nodes_that_know_one_bootstrap_address_find_and_connect_to_each_other(tmp_path: Path) -> None:
    """Nodes 1-4 start at once, each knowing only node 0's address. Within the bound every node is
    connected to the four others (``connections_low`` 8 allows it) and remembers their addresses."""
    dirs, ids = mesh_dirs(tmp_path, 5)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(node_in(dirs[0], mesh_name="blue"))
        begun = trio.current_time()
        nodes = [first]
        for d in dirs[1:]:
            nodes.append(await stack.enter_async_context(
                node_in(d, bootstrap=[first.listen_addrs()[0]], mesh_name="blue")))

        def everyone() -> bool:  # connected, and each other's addresses remembered (for next time)
            return all(set(n.connected_peers()) >= set(ids) - {n.peer_id}
                       and n.known is not None and set(n.known.peers()) >= set(ids) - {n.peer_id} for n in nodes)

        with trio.fail_after(FIVE_FIND_EACH_OTHER_WITHIN):
            await until(first, everyone, "every node connected to every other")
        took = trio.current_time() - begun
        assert all(n.exchange.other_mesh == 0 for n in nodes)
        # What p2p_status counts of it: node 0 answered each newcomer's exchange over the connection
        # each opened, and each newcomer asked at least node 0; no visits (each wants peers still).
        stats = [n.statistics() for n in nodes]
        assert stats[0].exchanges["answered"] >= 4 and stats[0].connections_opened >= 4
        assert all(s.exchanges["asked"] >= 1 and s.exchanges["visits"] == 0 for s in stats)
        print(f"five nodes connected to each other {took:.2f}s after the second one started")


async def test_nodes_of_different_meshes_never_exchange_peers(tmp_path: Path) -> None:
    """A shared bootstrap node of mesh "blue"; a node of mesh "green" bootstraps to it too. Both
    sides authorize everyone, yet green is told of no blue peer, no blue peer of green."""
    dirs, _ = mesh_dirs(tmp_path, 4)
    async with node_in(dirs[0], mesh_name="blue") as hub, \
            node_in(dirs[1], bootstrap=[hub.listen_addrs()[0]], mesh_name="blue") as b1, \
            node_in(dirs[2], bootstrap=[hub.listen_addrs()[0]], mesh_name="blue") as b2:
        with trio.fail_after(20):
            await until(b1, lambda: b1.is_connected(b2.peer_id), "the blue nodes to find each other")
        async with node_in(dirs[3], bootstrap=[hub.listen_addrs()[0]], mesh_name="green") as green:
            with trio.fail_after(20):
                await until(green, lambda: green.is_connected(hub.peer_id), "green's bootstrap connection")
                # Explicit asks both ways: answered with no peers, and remembered as another mesh.
                assert await green.exchange_peers(hub.peer_id) == []
                assert await hub.exchange_peers(green.peer_id) == []
                await b1.exchange_peers(hub.peer_id)  # a blue node asks the hub after green came
            assert green.connected_peers() == [hub.peer_id]
            assert green.known is not None and set(green.known.peers()) == {hub.peer_id}
            assert green.peer_id not in hub.exchange.announced  # its hello was not kept
            assert green.peer_id not in {p["peer_id"] for p in hub.exchange.view(b1.peer_id)}
            for blue in (b1, b2):
                assert blue.known is not None and green.peer_id not in blue.known.peers()
                assert not blue.is_connected(green.peer_id)
            assert green.exchange.other_mesh >= 1 and hub.exchange.other_mesh >= 1
            # An unnamed node is another mesh too.
            async with node_in(tmp_path / "plain", bootstrap=[hub.listen_addrs()[0]]) as plain:
                hub.authorized.authorize(plain.peer_id, "plain")
                with trio.fail_after(20):
                    await until(plain, lambda: plain.is_connected(hub.peer_id), "plain's bootstrap connection")
                    assert await plain.exchange_peers(hub.peer_id) == []
                assert plain.connected_peers() == [hub.peer_id]


EIGHT_KNOW_EACH_OTHER_WITHIN = 120.0
"""Seconds eight nodes with connections bounded to 2-3 may take until each remembers every other
(measured: 12-63 s, set by the exchange's ~10 s refresh and its ~30 s visits; with answers that
told only of connected peers and no visits, not within 90 s: bench/discovery.py, docs/performance.md
section 10)."""


async def test_with_bounded_connections_every_node_learns_every_other_from_one_bootstrap_address(
        tmp_path: Path) -> None:
    """Eight nodes, ``connections_low`` 2 and ``connections_high`` 3, each knowing only node 0's
    address: no node stays connected to more than 3 others, yet every node's ``peers.db`` ends up
    with every other (answers carry a sample of peers not connected now, ``known``, with the
    addresses each announced itself and at most ``KNOWN_HOPS`` exchanges from it; now and then a
    node visits a remembered peer it is not connected to, which joins parts of the mesh that had
    settled apart)."""
    count = 8
    async with mesh(tmp_path, count, lambda i: {"connections_low": 2, "connections_high": 3}) as nodes:
        ids = {n.peer_id for n in nodes}
        for n in nodes:
            n.trim_grace = 2.0  # the trimmer's grace, shortened: the mesh gets to its bounds sooner
        begun = trio.current_time()

        def everyone_known() -> bool:
            return all(n.known is not None and set(n.known.peers()) >= ids - {n.peer_id} for n in nodes)

        with trio.fail_after(EIGHT_KNOW_EACH_OTHER_WITHIN):
            await until(nodes[0], everyone_known, "every node remembering every other")
            # ... and the connections stayed bounded: trimmed back to at most 3 once each grace passed.
            await until(nodes[0], lambda: all(len(n.connected_peers()) <= 3 for n in nodes), "the bound kept")
        took = trio.current_time() - begun
        for n in nodes:  # what was remembered is first-hand: the addresses each peer announced itself
            assert n.known is not None
            for other in nodes:
                if other is not n:
                    assert set(n.known.addrs(other.peer_id)) & set(other.announced_addrs()), (n.peer_id, other.peer_id)
        print(f"\n{count} nodes (low 2, high 3) each remembered every other {took:.1f}s after the last started; "
              f"connections per node: {sorted(len(n.connected_peers()) for n in nodes)}")


async def test_visits_that_teach_nothing_come_less_and_less_often(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Node a keeps one peer (b) and knows c through b: it visits c, learns nothing new each time,
    and so waits twice as long before each next visit, up to ``VISIT_MAX_SECONDS`` (shortened
    here to 0.3 s doubling up to 1.2 s: at 0.3 s a visit each, 5 s would hold 11 or more)."""
    from triomcp.p2p import exchange

    monkeypatch.setattr(exchange, "VISIT_SECONDS", 0.3)
    monkeypatch.setattr(exchange, "VISIT_MAX_SECONDS", 1.2)
    monkeypatch.setattr(exchange, "PEER_EXCHANGE_REFRESH", 0.05)  # rounds come fast
    dirs, _ = mesh_dirs(tmp_path, 3)
    async with node_in(dirs[1]) as b, node_in(dirs[2], bootstrap=[b.listen_addrs()[0]]) as c, \
            node_in(dirs[0], bootstrap=[b.listen_addrs()[0]], connections_low=1, connections_high=2) as a:
        with trio.fail_after(20):
            await until(a, lambda: a.known is not None and c.peer_id in a.known.peers(), "a to learn of c")
        visits: list[float] = []
        visit = a.exchange.visit

        async def counted() -> str | None:
            visits.append(trio.current_time())
            return await visit()

        monkeypatch.setattr(a.exchange, "visit", counted)
        await trio.sleep(5.0)  # the quantity measured: visits in 5 s
        assert 3 <= len(visits) <= 10, visits
        gaps = [later - earlier for earlier, later in itertools.pairwise(visits)]
        assert sum(gaps[-2:]) / 2 > gaps[0], gaps  # the last ones at 0.6-1.8 s, the first at 0.15-0.45 s
