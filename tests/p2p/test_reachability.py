"""Reachability (``p2p/reachability.py``): trusted peers dial a node back, between real nodes on
127.0.0.1 (where every listener is reachable: ``public``; ``private`` is shown by a listener that
is gone, here, and by real NAT in ``tests/reliability/test_nat.py``).

No sleeps; every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from harness.procs import free_port
from tests.p2p.conftest import authorize, node_in
from triomcp.p2p import Node
from triomcp.p2p.exchange import read_one_frame
from triomcp.p2p.framing import encode_frame
from triomcp.p2p.reachability import (
    ANSWER_EVERY,
    DIALBACK_PROTOCOL,
    MAX_FRAME,
    PRIVATE,
    PUBLIC,
    UNKNOWN,
    dial_back,
    verdict,
)
from triomcp.server.metrics import Metrics

CHECK = {"reachability": {"check": True, "interval": 3600}}


def test_the_verdict_of_one_check() -> None:
    assert verdict([]) == UNKNOWN and verdict([None, None]) == UNKNOWN
    assert verdict([False, None]) == PRIVATE and verdict([False, False]) == PRIVATE
    assert verdict([False, True, None]) == PUBLIC  # one peer reaching it is enough


async def _raw_request(asker: Node, answerer: Node, payload: bytes) -> dict[str, object]:
    """Send ``payload`` on a dial-back stream, read the one answer."""
    with trio.fail_after(10):
        stream = await asker.host.new_stream(ID.from_base58(answerer.peer_id), [TProtocol(DIALBACK_PROTOCOL)])
        try:
            await stream.write(payload)
            return await read_one_frame(stream, MAX_FRAME)
        finally:
            await stream.close()


async def test_a_node_on_loopback_is_found_public_by_a_trusted_peer(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a", peer_exchange=False, **CHECK) as a, \
            node_in(tmp_path / "b", peer_exchange=False) as b:
        authorize(a, b)
        authorize(b, a)
        assert a.reachability.state == UNKNOWN and a.reachability.statistics().checked_ago is None
        await a.reachability.check()  # nobody to ask yet: unchanged
        assert a.reachability.state == UNKNOWN and a.reachability.statistics().checks == 0
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
            while a.reachability.state == UNKNOWN:  # the node's own loop asks B on the new connection
                with trio.move_on_after(0.05):
                    await a.reachability.next_change().wait()
        port = a.host.get_transport_addrs()[0].value_for_protocol("tcp")
        stats = a.reachability.statistics()
        assert stats.state == PUBLIC and stats.reachable_at == [f"/ip4/127.0.0.1/tcp/{port}"]
        assert b.reachability.statistics().answered == 1
        assert a.relay_status()["reachability"]["state"] == PUBLIC


async def test_a_listener_that_is_gone_is_not_reachable() -> None:
    port = free_port()  # nothing listens there
    with trio.fail_after(5):
        assert await dial_back("127.0.0.1", port) is False


async def test_only_authorized_peers_are_answered_within_their_rate_limit(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a", peer_exchange=False) as a, node_in(tmp_path / "b", peer_exchange=False) as b:
        authorize(a, b)  # A lists B (it may ask B); B does not list A yet
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
        assert await _raw_request(a, b, encode_frame({"ports": [1]})) == {"error": "not authorized"}
        assert await a.reachability.check() == UNKNOWN  # a refusal is no answer
        assert b.reachability.statistics().answered == 0 and b.reachability.statistics().refused == 2
        authorize(b, a)
        assert await a.reachability.check() == PUBLIC
        # The burst is 2: the next request within ANSWER_EVERY seconds is refused, and changes nothing.
        answered = await _raw_request(a, b, encode_frame({"ports": [int(a.listen_addrs()[0].split("/")[4])]}))
        assert answered["tried"] == 1 and answered["reachable"]
        assert await _raw_request(a, b, encode_frame({"ports": [1]})) == {"error": "rate limited"}
        assert await a.reachability.check() == PUBLIC
        assert b.reachability.statistics().answered == 2 and ANSWER_EVERY >= 10


async def test_hostile_dialback_requests_are_refused_and_the_node_keeps_answering(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a", peer_exchange=False) as a, node_in(tmp_path / "b", peer_exchange=False) as b, \
            node_in(tmp_path / "c", peer_exchange=False) as c:
        authorize(b, a, c)
        authorize(c, b)
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
            await c.connect(b.listen_addrs()[0])
        too_many = await _raw_request(a, b, encode_frame({"ports": list(range(1000, 1010))}))
        assert too_many == {"error": "ports must be 1 to 4 TCP ports"}
        b.reachability._counters.budgets.clear()  # the next hostile request is judged on its content
        assert "error" in await _raw_request(a, b, encode_frame({"ports": ["4001", True]}))
        b.reachability._counters.budgets.clear()
        with trio.fail_after(10):  # an oversized frame: the stream is closed without an answer
            stream = await a.host.new_stream(ID.from_base58(b.peer_id), [TProtocol(DIALBACK_PROTOCOL)])
            await stream.write(encode_frame({"ports": [1], "pad": "x" * (2 * MAX_FRAME)}))
            with pytest.raises(StreamEOF):  # closed, unanswered
                await stream.read(4096)
            await stream.close()
        assert b.reachability.statistics().refused == 2  # the two bad contents (the oversized one: no answer)
        assert await c.reachability.check() == PUBLIC  # B still answers, and its host is alive


async def test_a_node_with_a_relay_announces_its_relayed_address_only_while_not_public(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r:
        b_settings = {"relay": {"use": [r.listen_addrs()[0]]}, "peer_exchange": False}
        async with node_in(tmp_path / "b", **b_settings) as b:
            authorize(r, b)
            authorize(b, r)
            with trio.fail_after(20):
                while not b.relayed_addrs():
                    with trio.move_on_after(0.05):
                        await b.wait_peers_changed()
            (relayed,) = b.relayed_addrs()
            assert b.reachability.state == UNKNOWN and relayed in b.announced_addrs()
            told = b.reservations.announcements if b.reservations else -1
            assert await b.reachability.check() == PUBLIC
            assert relayed not in b.announced_addrs() and b.relayed_addrs() == [relayed]  # still reserved
            assert b.relay_status()["announces_relayed"] is False
            # Fault injection: R's dial-backs fail from now on (as behind NAT): B is private again,
            # announces its relayed address, and tells its peers (the announcer wakes).
            async def unreachable(ip: str, port: int) -> bool:
                return False

            monkeypatch.setattr("triomcp.p2p.reachability.dial_back", unreachable)
            r.reachability._counters.budgets.clear()  # B asked twice within R's rate limit
            assert await b.reachability.check() == PRIVATE
            assert relayed in b.announced_addrs() and b.relay_status()["announces_relayed"] is True
            with trio.fail_after(10):
                while b.reservations is not None and b.reservations.announcements < told + 2:
                    with trio.move_on_after(0.05):
                        await b.wait_peers_changed()


class _OnlyNode:
    """The services /metrics reads, with a real node and nothing else."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.engine = SimpleNamespace(sessions={}, statistics=lambda: SimpleNamespace(inflight_calls=0))

    def __getattr__(self, name: str) -> None:
        return None


async def test_reachability_and_relay_figures_reach_metrics(tmp_path: Path) -> None:
    async with node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r:
        b_settings = {"relay": {"use": [r.listen_addrs()[0]]}, "peer_exchange": False}
        async with node_in(tmp_path / "b", **b_settings) as b, node_in(tmp_path / "x", **b_settings) as x:
            authorize(r, b)
            authorize(b, r)  # X is not authorized at R: its reservation is refused
            with trio.fail_after(20):
                while not b.relayed_addrs() or r.circuits.statistics().hop_refused < 1:
                    with trio.move_on_after(0.05):
                        await b.wait_peers_changed()
            assert await b.reachability.check() == PUBLIC
            seen = {}
            for n, node in (("r", r), ("b", b), ("x", x)):
                metrics = Metrics()
                metrics.watch(_OnlyNode(node))  # type: ignore[arg-type]
                seen[n] = metrics
            assert seen["b"].sample("triomcp_p2p_reachability", {"state": "public"}) == 1
            assert seen["b"].sample("triomcp_p2p_reachability", {"state": "unknown"}) == 0
            assert seen["r"].sample("triomcp_p2p_reachability", {"state": "unknown"}) == 1
            assert seen["b"].sample("triomcp_p2p_relay_reservations_held") == 1
            assert seen["x"].sample("triomcp_p2p_relay_reservations_held") == 0
            assert seen["r"].sample("triomcp_p2p_relay_reservations_served") == 1
            assert seen["r"].sample("triomcp_p2p_relay_refusals_total", {"what": "hop"}) >= 1
            assert seen["r"].sample("triomcp_p2p_relay_refusals_total", {"what": "dialback"}) == 0
            assert seen["b"].sample("triomcp_p2p_relayed_connections") == 0
            assert seen["b"].sample("triomcp_p2p_hole_punches_total", {"outcome": "direct"}) == 0
            assert b"# TYPE triomcp_p2p_reachability gauge" in seen["b"].render()
