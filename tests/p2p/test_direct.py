"""Calls move to a direct connection as soon as one appears beside a relayed one (``p2p/direct.py``).

Three real nodes on 127.0.0.1: a relay R, B reserving a slot on it, and A, which first reaches B
through R. Then A dials B directly, as py-libp2p's DCUtR does once it has punched a hole
(``Swarm.dial_addr``; on loopback no hole is needed: ``tests/reliability/test_nat.py`` has the
NATs). Both A and B serve a small ASGI app over ``/http/1.1``, so HTTP streams are pooled on the
relayed connection too. Bounded waits only (each look 0.05 s after the last, under
``trio.fail_after``); nothing asserts how fast anything is. ``relay.to_direct`` is read as
``p2p_status`` and ``/metrics`` show it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import multiaddr as ma
import pytest
import trio
from libp2p.peer.id import ID

from tests.p2p.conftest import authorize, fake_handler, p2p_settings
from triomcp.errors import PeerError
from triomcp.p2p import Node, open_node
from triomcp.server.metrics import Metrics

Message = MutableMapping[str, Any]


class _App:
    """``/`` answers ``ok``; ``/slow`` answers once ``go`` is set."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.go = trio.Event()

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        await receive()
        if scope["path"] == "/slow":
            self.started.set()
            await self.go.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _get(node: Node, peer: str, target: str = "/") -> bytes:
    async with node.http.request(peer, "GET", target, [(b"host", b"peer")], b"") as response:
        return b"".join([chunk async for chunk in response.chunks()])


async def _gossip_reaches(sender: Node, receiver: Node) -> tuple[str, dict[str, Any]]:
    """A work announcement from ``sender`` as ``receiver`` gets it (sent again each 0.2 s, 50 times
    at most: a mesh that lost a peer grafts it again at a heartbeat)."""
    assert sender.gossip is not None and receiver.gossip is not None
    received = receiver.gossip.messages()
    for _ in range(50):
        await sender.gossip.publish({"after": "the move"})
        with trio.move_on_after(0.2):
            return await received.receive()
    raise AssertionError(f"no gossip from {sender.peer_id} reached {receiver.peer_id}")


async def _until(done: Callable[[], bool], node: Node) -> None:
    while not done():
        with trio.move_on_after(0.05):
            await node.wait_peers_changed()


class _OnlyNode(SimpleNamespace):
    """The services /metrics reads: a real node, an idle engine, nothing else."""

    def __getattr__(self, name: str) -> None:
        return None


def _moved(*nodes: Node) -> dict[str, tuple[int, float]]:
    """Each outcome of ``relay.to_direct``, summed over ``nodes``: (``p2p_status``, ``/metrics``)."""
    status = {"closed": 0, "cut": 0}
    metric = dict.fromkeys(status, 0.0)
    for node in nodes:
        metrics = Metrics()
        metrics.watch(_OnlyNode(node=node, engine=SimpleNamespace(  # type: ignore[arg-type]
            sessions={}, statistics=lambda: SimpleNamespace(inflight_calls=0))))
        for outcome in status:
            status[outcome] += node.relay_status()["to_direct"][outcome]
            metric[outcome] += metrics.sample("triomcp_p2p_relayed_connections_to_direct_total",
                                              {"outcome": outcome})
    return {outcome: (status[outcome], metric[outcome]) for outcome in status}


def _kinds(node: Node, peer: Node) -> list[str]:
    return [c["kind"] for c in node.connections_to(peer.peer_id)]


def _streams(node: Node, peer: Node, kind: str) -> int:
    return sum(c["streams"] for c in node.connections_to(peer.peer_id) if c["kind"] == kind)


@asynccontextmanager
async def _relayed_pair(tmp_path: Path, app_a: _App, app_b: _App, **kw: Any) -> AsyncIterator[tuple[Node, Node]]:
    """A and B, connected through R only; each has called the other over MCP and HTTP."""
    async with AsyncExitStack() as stack:
        r = await stack.enter_async_context(open_node(
            p2p_settings(relay={"service": True}, peer_exchange=False, **kw), tmp_path / "r",
            frame_handler=fake_handler))
        b = await stack.enter_async_context(open_node(
            p2p_settings(relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False, **kw), tmp_path / "b",
            frame_handler=fake_handler, http_app=app_b))
        a = await stack.enter_async_context(open_node(
            p2p_settings(peer_exchange=False, **kw), tmp_path / "a", frame_handler=fake_handler, http_app=app_a))
        authorize(r, a, b)
        authorize(a, b)
        authorize(b, a)
        with trio.fail_after(20):
            await _until(lambda: bool(b.relayed_addrs()), b)
            await a.connect(b.relayed_addrs()[0])
            assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
            assert (await b.call(a.peer_id, "whoami", {}))["peer_id"] == b.peer_id
            assert await _get(a, b.peer_id) == b"ok"
            assert await _get(b, a.peer_id) == b"ok"
        assert _kinds(a, b) == ["relayed"] and _kinds(b, a) == ["relayed"]
        assert a.http.idle(b.peer_id) == 1 and b.http.idle(a.peer_id) == 1
        yield a, b


async def _dial_direct(a: Node, b: Node) -> None:
    """What DCUtR does once a hole is punched: a fresh direct connection beside the relayed one."""
    await a.host.get_network().dial_addr(ma.Multiaddr(b.host.get_addrs()[0]), ID.from_base58(b.peer_id))


async def test_calls_move_to_the_direct_connection_at_once_and_the_relayed_one_closes_once_unused(
        tmp_path: Path) -> None:
    app_a, app_b = _App(), _App()
    async with _relayed_pair(tmp_path, app_a, app_b) as (a, b):
        # The stream ends the move waits on come from the node's one notifee (host.py's).
        notifees = a.host.get_network().notifees
        assert [type(n).__name__ for n in notifees if type(n).__module__.startswith("triomcp.")] == ["_Notifee"]
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                slow: list[bytes] = []

                async def slow_request() -> None:
                    slow.append(await _get(a, b.peer_id, "/slow"))

                nursery.start_soon(slow_request)  # in flight on the relayed connection
                await app_b.started.wait()
                await _dial_direct(a, b)
                assert sorted(_kinds(a, b)) == ["direct", "relayed"]

                # The next calls, both ways, MCP and HTTP, go over the direct connection, while the
                # relayed one still carries the slow request.
                assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
                assert (await b.call(a.peer_id, "whoami", {}))["peer_id"] == b.peer_id
                assert await _get(a, b.peer_id) == b"ok"
                assert await _get(b, a.peer_id) == b"ok"
                assert sorted(_kinds(a, b)) == ["direct", "relayed"]
                # On A's direct connection: its MCP stream to B, B's to A, one pooled HTTP stream each way.
                assert _streams(a, b, "direct") >= 4, a.connections_to(b.peer_id)
                app_b.go.set()
            assert slow == [b"ok"]  # the request in flight on the relayed connection was not cut

            # Nothing uses the relayed connection any more: it is closed, on both sides.
            await _until(lambda: _kinds(a, b) == ["direct"] and _kinds(b, a) == ["direct"], a)
            moved = _moved(a, b)
            assert moved["cut"] == (0, 0), moved
            assert moved["closed"][0] >= 1 and moved["closed"][1] == moved["closed"][0], moved

            # Everything still works over the direct connection, gossip included (its streams ended
            # with the relayed connection and were opened again on the direct one).
            assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
            assert await _get(b, a.peer_id) == b"ok"
            assert await _gossip_reaches(a, b) == (a.peer_id, {"after": "the move"})
            assert await _gossip_reaches(b, a) == (b.peer_id, {"after": "the move"})
        assert _kinds(a, b) == ["direct"]


async def test_a_relayed_connection_still_in_use_is_closed_after_the_call_timeout(tmp_path: Path) -> None:
    async with _relayed_pair(tmp_path, _App(), _App(), call_timeout=1.0) as (a, b):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                failed: list[str] = []

                async def blocked_call() -> None:
                    with pytest.raises(PeerError) as raised:  # B's handler blocks until cancelled
                        await a.call(b.peer_id, "block", {"tag": "cut"})
                    failed.append(str(raised.value))

                nursery.start_soon(blocked_call)  # in flight on A's MCP stream, on the relayed connection
                await _until(lambda: _streams(b, a, "relayed") >= 4, b)  # B serves it (and 3 more)
                await _dial_direct(a, b)
                assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id  # a new stream, direct
                await _until(lambda: _kinds(a, b) == ["direct"], a)  # at p2p.call_timeout, in use or not
            assert len(failed) == 1 and "connection lost during block" in failed[0], failed
            moved = _moved(a, b)
            assert moved["cut"][0] >= 1 and moved["cut"][1] == moved["cut"][0], moved
            assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
            assert await _get(a, b.peer_id) == b"ok"


async def test_libp2p_opens_a_new_stream_on_the_direct_connection_of_the_two(tmp_path: Path) -> None:
    """Pinned: py-libp2p 0.8.1's ``Swarm.new_stream`` picks the direct connection over a relayed
    one (``_best_connection``), in either order; only the long-lived streams needed moving."""
    async with _relayed_pair(tmp_path, _App(), _App()) as (a, b):
        with trio.fail_after(20):
            await _dial_direct(a, b)
            swarm: Any = a.host.get_network()
            conns = a.circuits.connections_of(b.peer_id)
            assert sorted(a.circuits.relay_through(c) is None for c in conns) == [False, True], conns
            direct = next(c for c in conns if a.circuits.relay_through(c) is None)
            for order in (conns, conns[::-1]):
                assert swarm._select_connection(order, ID.from_base58(b.peer_id)) is direct
