"""Work announcements over GossipSub (``triomcp.p2p.gossip``): the content rules synchronously, then
real nodes on 127.0.0.1 (TCP + Noise + yamux), py-libp2p's own pubsub and router.

Ground rules: no sleeps as synchronisation (waits are bounded loops or channel receives under
``trio.fail_after``), loopback only. Every test also asserts that nothing, ours or py-libp2p's,
logged at WARNING or above, except the records a test names as expected.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.tools.anyio_service import background_trio_service

from tests.p2p.conftest import authorize, fake_handler, p2p_settings
from triomcp.p2p import Node, open_node
from triomcp.p2p.gossip import (
    MAX_MESSAGE_BYTES,
    WORK_TOPIC,
    Gossip,
    _Inbox,
    decode_message,
    encode_message,
    start_gossip,
)


class Loud:
    """The WARNING+ records of a test; a test may allow the ones it expects."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        self._allowed: list[Callable[[logging.LogRecord], bool]] = []

    def allow(self, predicate: Callable[[logging.LogRecord], bool]) -> None:
        self._allowed.append(predicate)

    def records(self) -> list[logging.LogRecord]:
        """Setup's, the test's, and teardown's so far (``caplog.records`` holds the current phase's)."""
        phases = [*self._caplog.get_records("setup"), *self._caplog.get_records("call"), *self._caplog.records]
        return [r for r in phases if r.levelno >= logging.WARNING and not any(allowed(r) for allowed in self._allowed)]


@pytest.fixture(autouse=True)
def loud(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loud]:
    # py-libp2p's root logger does not propagate (triomcp.logs turns that on in the server): do it here.
    monkeypatch.setattr(logging.getLogger("libp2p"), "propagate", True)
    caplog.set_level(logging.WARNING)
    watch = Loud(caplog)
    yield watch
    assert [f"{r.levelname} {r.name}: {r.getMessage()}" for r in watch.records()] == []


async def until(predicate: Callable[[], bool], what: str) -> None:
    """A bounded wait: 200 checks, 25 ms apart (5 s)."""
    for _ in range(200):
        if predicate():
            return
        await trio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def bare_node(path: Path, **kw: Any) -> AsyncIterator[Node]:
    """A node without the work topic it would mount itself: these tests mount gossip by hand."""
    async with open_node(p2p_settings(**kw), path, frame_handler=fake_handler, gossip=False) as node:
        yield node


@asynccontextmanager
async def nodes_with_gossip(tmp_path: Path, names: str, *, gossip: str | None = None
                            ) -> AsyncIterator[tuple[dict[str, Node], dict[str, Gossip]]]:
    """Nodes named by the letters of ``names``; gossip mounted on those in ``gossip`` (default: all),
    before any connection. On the way out: gossip closed, then the hosts."""
    async with AsyncExitStack() as stack:
        nodes = {n: await stack.enter_async_context(bare_node(tmp_path / n, peer_exchange=False)) for n in names}
        nursery = await stack.enter_async_context(trio.open_nursery())
        gossips = {n: await start_gossip(nodes[n].host, nursery, is_authorized=nodes[n].authorized.is_authorized)
                   for n in (names if gossip is None else gossip)}
        try:
            yield nodes, gossips
        finally:
            for g in gossips.values():
                await g.aclose()


def pair_meshed(a: Node, ga: Gossip, b: Node, gb: Gossip) -> Callable[[], bool]:
    return lambda: ga.mesh_peers() == [b.peer_id] and gb.mesh_peers() == [a.peer_id]


def mutual(*nodes: Node) -> None:
    for node in nodes:
        authorize(node, *(other for other in nodes if other is not node))


# -- the content rules, synchronously ---------------------------------------------------------------

def test_encode_is_compact_json_and_refuses_what_is_not_a_small_object() -> None:
    assert encode_message({"type": "t", "n": 2, "é": [1]}) == '{"type":"t","n":2,"é":[1]}'.encode()
    with pytest.raises(ValueError, match="over the 16384-byte limit"):
        encode_message({"x": "a" * MAX_MESSAGE_BYTES})
    assert len(encode_message({"x": "a" * (MAX_MESSAGE_BYTES - 8)})) == MAX_MESSAGE_BYTES
    for bad in ([1, 2], "text", None):
        with pytest.raises(ValueError, match="JSON object"):
            encode_message(bad)  # type: ignore[arg-type]
    for bad_value in (object(), float("nan"), {1, 2}):
        with pytest.raises(ValueError, match="must be JSON"):
            encode_message({"x": bad_value})


def test_decode_accepts_objects_only() -> None:
    assert decode_message(b'{"a":1}') == {"a": 1}
    cases = {b"[1,2]": "list", b'"s"': "str", b"null": "NoneType", b"{": "not JSON", b"\xff{}": "not JSON",
             b'{"a":NaN}': "not JSON", b"[" * 5000 + b"]" * 5000: "not JSON",
             b'{"a":"' + b"x" * MAX_MESSAGE_BYTES + b'"}': "over 16384 bytes"}
    for data, reason in cases.items():
        with pytest.raises(ValueError, match=reason):
            decode_message(data)
    assert decode_message(b'{"a":1}', max_bytes=7) == {"a": 1}


def test_the_inbox_never_blocks_and_drops_the_oldest() -> None:
    inbox = _Inbox(3)
    receiver = inbox.receiver()
    for i in range(5):
        inbox.put("origin", {"i": i})
    assert [receiver.receive_nowait()[1]["i"] for _ in range(3)] == [2, 3, 4]
    assert (inbox.delivered, inbox.dropped) == (5, 2)
    inbox.close()
    inbox.put("origin", {"late": True})  # after close: ignored, not raised
    with pytest.raises(trio.EndOfChannel):
        receiver.receive_nowait()


# -- real nodes ------------------------------------------------------------------------------------

async def test_a_message_crosses_a_line_of_three_nodes(tmp_path: Path) -> None:
    async with nodes_with_gossip(tmp_path, "abc") as (n, g):
        mutual(n["a"], n["b"], n["c"])
        at_c, at_b = g["c"].messages(), g["b"].messages()
        with trio.fail_after(10):
            await n["a"].connect(n["b"].listen_addrs()[0])
            await n["b"].connect(n["c"].listen_addrs()[0])
            await until(lambda: g["a"].mesh_peers() == [n["b"].peer_id]
                        and g["b"].mesh_peers() == sorted([n["a"].peer_id, n["c"].peer_id])
                        and g["c"].mesh_peers() == [n["b"].peer_id], "the mesh a-b-c")
            await g["a"].publish({"type": "tool.call", "queued": 3})
            assert await at_c.receive() == (n["a"].peer_id, {"type": "tool.call", "queued": 3})
            assert await at_b.receive() == (n["a"].peer_id, {"type": "tool.call", "queued": 3})
        a, b, c = (g[x].statistics() for x in "abc")
        assert (a.published, a.delivered, b.delivered, c.delivered) == (1, 0, 1, 1)  # not to its origin
        assert a.copies_sent == 1 and b.copies_sent == 1 and c.copies_sent == 0  # b forwards; c has no one
        assert a.rejected == b.rejected == c.rejected == 0


async def test_gossip_mounted_after_the_nodes_connected_still_forms(tmp_path: Path) -> None:
    """Stock pubsub only sees connections made after it (its notifee): peers connected before are
    registered at start, and the other side answers the stream the first opens."""
    async with nodes_with_gossip(tmp_path, "ab", gossip="") as (n, _), trio.open_nursery() as nursery:
        mutual(n["a"], n["b"])
        with trio.fail_after(10):
            await n["a"].connect(n["b"].listen_addrs()[0])
            ga = await start_gossip(n["a"].host, nursery, is_authorized=n["a"].authorized.is_authorized)
            gb = await start_gossip(n["b"].host, nursery, is_authorized=n["b"].authorized.is_authorized)
            try:
                await until(pair_meshed(n["a"], ga, n["b"], gb), "the mesh a-b")
                await gb.publish({"late": True})
                assert await ga.messages().receive() == (n["b"].peer_id, {"late": True})
            finally:
                await ga.aclose()
                await gb.aclose()


async def test_a_relayed_message_from_an_origin_the_receiver_does_not_authorize_is_rejected(tmp_path: Path) -> None:
    async with nodes_with_gossip(tmp_path, "abc") as (n, g):
        mutual(n["a"], n["b"])
        mutual(n["b"], n["c"])  # c knows b, not a
        with trio.fail_after(10):
            await n["a"].connect(n["b"].listen_addrs()[0])
            await n["b"].connect(n["c"].listen_addrs()[0])
            await until(lambda: len(g["b"].mesh_peers()) == 2 and g["a"].mesh_peers() != [], "the mesh a-b-c")
            await g["a"].publish({"from": "a"})
            await until(lambda: g["c"].statistics().rejected == 1, "c rejecting a's message")
            await g["b"].publish({"from": "b"})
            assert await g["c"].messages().receive() == (n["b"].peer_id, {"from": "b"})
        assert g["b"].statistics().delivered == 1  # b authorizes a
        assert g["c"].statistics().delivered == 1  # b's only


async def test_a_peer_the_node_does_not_authorize_is_refused_its_stream(tmp_path: Path, loud: Loud) -> None:
    async with nodes_with_gossip(tmp_path, "ax") as (n, g):
        authorize(n["x"], n["a"])  # x trusts a; a does not know x
        # The refused side's py-libp2p logs one ERROR as its stream is reset (its problem, once per
        # connection: it does not retry). a stays quiet.
        loud.allow(lambda r: r.name == "libp2p.host.basic_host" and f"stream to peer {n['a'].peer_id}" in r.getMessage())
        with trio.fail_after(10):
            await n["x"].connect(n["a"].listen_addrs()[0])
            await until(lambda: g["a"].statistics().refused_streams == 1, "a refusing x's stream")
            for i in range(3):
                await g["x"].publish({"i": i})
        a = g["a"].statistics()
        assert (a.delivered, a.rejected, a.rpcs_sent) == (0, 0, 0)
        assert g["a"].mesh_peers() == [] and g["x"].mesh_peers() == []
        assert g["x"].statistics().copies_sent == 0  # x has no stream to a: nothing left it


async def test_bad_messages_from_an_authorized_peer_are_rejected(tmp_path: Path) -> None:
    """A stock py-libp2p pubsub (no rules of ours) on an authorized node sends what ours never would."""
    async with nodes_with_gossip(tmp_path, "arb", gossip="a") as (n, g), AsyncExitStack() as stack:
        mutual(n["a"], n["r"], n["b"])
        router = GossipSub([PROTOCOL_ID_V11], degree=6, degree_low=4, degree_high=12, heartbeat_interval=1)
        raw = Pubsub(n["r"].host, router)
        await stack.enter_async_context(background_trio_service(raw))
        await stack.enter_async_context(background_trio_service(router))
        await raw.wait_until_ready()
        await raw.subscribe(WORK_TOPIC)
        with trio.fail_after(10):
            await n["r"].connect(n["a"].listen_addrs()[0])
            a_id = ID.from_base58(n["a"].peer_id)
            await until(lambda: a_id in router.mesh.get(WORK_TOPIC, set()) and a_id in raw.peers, "r's stream and mesh")
            await raw.publish(WORK_TOPIC, b"[1,2,3]")  # JSON, not an object
            await raw.publish(WORK_TOPIC, b'{"x":"' + b"y" * MAX_MESSAGE_BYTES + b'"}')  # too big
            raw.strict_signing = False
            await raw.publish(WORK_TOPIC, b'{"unsigned":true}')
            await raw.push_msg(raw.my_id, forged(raw, origin=n["b"].peer_id))  # signed by r, "from" b
            raw.strict_signing = True
            await raw.publish(WORK_TOPIC, b'{"fine":true}')
            assert await g["a"].messages().receive() == (n["r"].peer_id, {"fine": True})
            # Bad signatures count per arrival (pubsub keeps no verdict for them): a copy replayed
            # by r's pubsub would count again.
            await until(lambda: g["a"].statistics().rejected >= 4, "a rejecting the four bad ones")
        assert g["a"].statistics().delivered == 1


def forged(pubsub: Pubsub, *, origin: str) -> rpc_pb2.Message:
    msg = rpc_pb2.Message(data=b'{"forged":true}', topicIDs=[WORK_TOPIC], from_id=ID.from_base58(origin).to_bytes(),
                          seqno=(7).to_bytes(8, "big"))
    key = pubsub.host.get_private_key()
    msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = pubsub.host.get_public_key().serialize()
    return msg


async def test_an_oversized_publish_raises_and_sends_nothing(tmp_path: Path) -> None:
    async with nodes_with_gossip(tmp_path, "a") as (_, g):
        with pytest.raises(ValueError, match="over the 16384-byte limit"):
            await g["a"].publish({"x": "a" * MAX_MESSAGE_BYTES})
        with pytest.raises(ValueError, match="JSON object"):
            await g["a"].publish(["not", "an", "object"])  # type: ignore[arg-type]
        await g["a"].publish({"alone": True})  # no peers: fine, not an error
        stats = g["a"].statistics()
        assert (stats.published, stats.publish_failures, stats.rpcs_sent) == (1, 0, 0)


async def test_a_peer_without_pubsub_is_never_probed_and_nothing_is_logged(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock pubsub opens a stream to every peer: to a client-only one (a CLI) that fails with one
    ERROR per connection. Here identify decides, and the node stays quiet (the fixture checks)."""
    async with nodes_with_gossip(tmp_path, "ap", gossip="a") as (n, g):
        mutual(n["a"], n["p"])
        beats = 0
        heartbeat = g["a"]._router.mesh_heartbeat

        def counted() -> Any:
            nonlocal beats
            beats += 1
            return heartbeat()

        monkeypatch.setattr(g["a"]._router, "mesh_heartbeat", counted)
        with trio.fail_after(10):
            await n["p"].connect(n["a"].listen_addrs()[0])
            await n["a"].ping(n["p"].peer_id)  # the connection works both ways
            start = beats
            await until(lambda: beats >= start + 2, "two heartbeats")
        assert g["a"].mesh_peers() == []
        assert ID.from_base58(n["p"].peer_id) not in g["a"]._pubsub.peers
        assert g["a"].statistics().rpcs_sent == 0


async def test_aclose_then_host_close_is_clean(tmp_path: Path) -> None:
    async with bare_node(tmp_path / "a", peer_exchange=False) as a, bare_node(tmp_path / "b", peer_exchange=False) as b:
        mutual(a, b)
        async with trio.open_nursery() as nursery:
            ga = await start_gossip(a.host, nursery, is_authorized=a.authorized.is_authorized)
            gb = await start_gossip(b.host, nursery, is_authorized=b.authorized.is_authorized)
            received = gb.messages()
            with trio.fail_after(10):
                await a.connect(b.listen_addrs()[0])
                await until(pair_meshed(a, ga, b, gb), "the mesh a-b")
                await ga.publish({"n": 1})
                assert await received.receive() == (a.peer_id, {"n": 1})
                await ga.aclose()
                await gb.aclose()
                await ga.aclose()  # idempotent
            assert nursery.child_tasks == frozenset()  # nothing of gossip's left in the caller's nursery
            assert not ga._pubsub._inbound and not gb._pubsub._inbound  # the inbound stream handlers ended
            with pytest.raises(trio.EndOfChannel):
                await received.receive()
            await ga.publish({"n": 2})  # after close: counted, not raised
            assert ga.statistics().publish_failures == 1
        await a.aclose()
        await b.aclose()


async def test_a_restarted_node_is_heard_again(tmp_path: Path) -> None:
    """Message ids are origin + seqno: with pubsub's own seqnos (the clock in seconds, then +1 a
    message) a node restarted within a second reuses its last session's ids, and its peers drop
    the new messages as seen. Ours start at the clock in nanoseconds."""
    async with nodes_with_gossip(tmp_path, "a") as (n, g):
        received = g["a"].messages()
        for session in range(2):
            async with bare_node(tmp_path / "b", peer_exchange=False) as b, trio.open_nursery() as nursery:
                mutual(n["a"], b)
                gb = await start_gossip(b.host, nursery, is_authorized=b.authorized.is_authorized)
                try:
                    with trio.fail_after(10):
                        await b.connect(n["a"].listen_addrs()[0])
                        await until(pair_meshed(n["a"], g["a"], b, gb), "the mesh a-b")
                        for i in range(5):
                            await gb.publish({"session": session, "i": i})
                        got = [(await received.receive())[1] for _ in range(5)]
                    assert sorted(m["i"] for m in got) == list(range(5)) and {m["session"] for m in got} == {session}
                finally:
                    await gb.aclose()


async def test_a_failing_pubsub_task_stops_gossip_not_the_node(tmp_path: Path, loud: Loud,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p's service manager stops the whole service when one task raises: gossip stops,
    logs it, and the caller's nursery and the host go on. (b's pubsub sees its stream to a die,
    re-opens one, is refused, and logs that once: py-libp2p's ERROR, allowed here.)"""
    async with nodes_with_gossip(tmp_path, "ab") as (n, g):
        loud.allow(lambda r: r.name.startswith("libp2p.tools.anyio_service") and "injected" in r.getMessage())
        loud.allow(lambda r: r.name == "triomcp.p2p" and "gossip on /triomcp/work/1 stopped" in r.getMessage())
        loud.allow(lambda r: r.name == "libp2p.host.basic_host" and f"stream to peer {n['a'].peer_id}" in r.getMessage())
        loud.allow(lambda r: r.name == "libp2p.protocol_muxer.multiselect_client" and "handshake" in r.getMessage())
        mutual(n["a"], n["b"])
        with trio.fail_after(10):
            await n["a"].connect(n["b"].listen_addrs()[0])
            await until(pair_meshed(n["a"], g["a"], n["b"], g["b"]), "the mesh a-b")

            def broken() -> Any:
                raise RuntimeError("injected")

            monkeypatch.setattr(g["a"]._router, "mesh_heartbeat", broken)
            await until(lambda: g["a"]._stopped.is_set(), "a's gossip to stop")
            await g["a"].publish({"after": "failure"})  # counted, not raised
            assert g["a"].statistics().publish_failures == 1
            assert await n["a"].ping(n["b"].peer_id) > 0  # the host is fine
            await g["b"].publish({"b": "still"})  # b's side is unaffected, a just hears nothing
            assert g["b"].statistics().published == 1
