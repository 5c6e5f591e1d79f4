"""Both ends of MCP over libp2p (``serve_stream``, ``PeerChannel``) over ``trio.testing`` memory
streams: no sockets, no libp2p. Waits are events; where time matters the clock is
``autojump_clock`` (virtual time, no sleeps as synchronisation)."""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from tests.p2p.streams import MemoryStream, RawPeer, stream_pair
from triomcp._ratelimit import TokenBucket
from triomcp.errors import PeerError, RemoteError
from triomcp.p2p.framing import HARD_CAP, encode_frame
from triomcp.p2p.rpc import FrameHandler, PeerChannel, serve_stream

CALLER = "12D3KooWCaller"


class Handler:
    """A small MCP-ish handler: echo, progress, block (until cancelled), fail; it records what it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.started: dict[Any, trio.Event] = {}
        self.cancelled: dict[Any, trio.Event] = {}
        self.gate = trio.Event()

    def event(self, table: dict[Any, trio.Event], key: Any) -> trio.Event:
        return table.setdefault(key, trio.Event())

    async def __call__(self, message: dict[str, Any], *, peer_id: str, notify: Any) -> dict[str, Any] | None:
        self.seen.append(message)
        params = message.get("params") or {}
        token = (params.get("_meta") or {}).get("progressToken")
        method = message["method"]
        if "id" not in message:
            return None
        if method == "echo":
            result: dict[str, Any] = {"echo": params.get("value"), "peer_id": peer_id}
        elif method == "progress":  # both callers are in flight before either reports
            self.event(self.started, params["value"]).set()
            await self.gate.wait()
            for step in (1, 2):
                await notify({"jsonrpc": "2.0", "method": "notifications/progress",
                              "params": {"progressToken": token, "progress": step, "message": params["value"]}})
            result = {"done": params["value"]}
        elif method == "block":
            self.event(self.started, params.get("tag")).set()
            try:
                await trio.sleep_forever()
            finally:
                self.event(self.cancelled, params.get("tag")).set()
        elif method == "fail":
            raise RuntimeError("a handler bug")
        else:
            return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "unknown"}}
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}


@contextlib.asynccontextmanager
async def serving(handler: FrameHandler, **kw: Any) -> AsyncIterator[tuple[RawPeer, trio.Event, list[int]]]:
    """``serve_stream`` on one end of a memory stream; the test drives the other end by hand.
    Yields that end, an event set once ``serve_stream`` has returned, and the frame errors counted."""
    client, server = stream_pair()
    frame_errors: list[int] = []
    returned = trio.Event()
    options: dict[str, Any] = {"authorized": lambda peer: True, "max_frame_bytes": 1024 * 1024,
                               "on_frame_error": lambda: frame_errors.append(1), **kw}

    async def serve() -> None:
        await serve_stream(server, CALLER, handler, **options)
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield RawPeer(client), returned, frame_errors
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def channel_to(handler: FrameHandler, **kw: Any) -> AsyncIterator[tuple[PeerChannel, list[MemoryStream]]]:
    """A PeerChannel whose every (re)opened stream is served by ``handler``; yields the opened
    server ends too, so a test can make the peer go away."""
    servers: list[MemoryStream] = []
    async with trio.open_nursery() as nursery:

        async def open_stream() -> MemoryStream:
            client, server = stream_pair()
            servers.append(server)
            nursery.start_soon(functools.partial(serve_stream, server, CALLER, handler, authorized=lambda peer: True,
                                                 max_frame_bytes=1024 * 1024, **kw))
            return client

        yield PeerChannel("12D3KooWCallee", open_stream, nursery, max_frame_bytes=1024 * 1024), servers
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def channel_to_raw(max_frame_bytes: int = 1024 * 1024) -> AsyncIterator[tuple[PeerChannel, RawPeer]]:
    """A PeerChannel to a peer the test plays by hand (one stream)."""
    client, server = stream_pair()

    async def open_stream() -> MemoryStream:
        return client

    async with trio.open_nursery() as nursery:
        yield PeerChannel("12D3KooWCallee", open_stream, nursery, max_frame_bytes=max_frame_bytes), RawPeer(server)
        nursery.cancel_scope.cancel()


def request(ident: Any, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}


async def test_a_request_is_answered() -> None:
    handler = Handler()
    async with channel_to(handler) as (channel, _):
        with trio.fail_after(5):
            assert await channel.call("echo", {"value": 1}) == {"echo": 1, "peer_id": CALLER}
            assert await channel.call("echo", {"value": 2, "_meta": {"k": "v"}}) == {"echo": 2, "peer_id": CALLER}
    assert [m["params"]["_meta"] for m in handler.seen] == [{"progressToken": 1}, {"k": "v", "progressToken": 2}]


async def test_remote_errors_keep_their_code() -> None:
    async with channel_to(Handler()) as (channel, _):
        with trio.fail_after(5):
            with pytest.raises(RemoteError, match="unknown") as unknown:
                await channel.call("nope", {})
            assert unknown.value.code == "method_not_found"
            with pytest.raises(RemoteError, match="internal error") as failed:
                await channel.call("fail", {})
            assert failed.value.code == "jsonrpc_-32603"
            assert (await channel.call("echo", {"value": "after"}))["echo"] == "after"  # the stream survived


async def test_an_unauthorized_peer_is_refused_and_nothing_runs() -> None:
    handler = Handler()
    async with serving(handler, authorized=lambda peer: False) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await peer.send(request(1, "echo", value=1))
            refused = await peer.receive()
    assert refused["id"] == 1 and refused["error"]["code"] == -32001 and CALLER in refused["error"]["message"]
    assert handler.seen == []


async def test_cancelling_a_caller_cancels_the_handler_and_nothing_more_is_sent() -> None:
    handler = Handler()
    async with serving(handler) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(request(1, "block", tag="one"))
            await handler.event(handler.started, "one").wait()
            await peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
            await handler.event(handler.cancelled, "one").wait()
            await peer.send(request(2, "echo", value="next"))
            answer = await peer.receive()  # the first frame after the cancel is the next request's answer
    assert answer == {"jsonrpc": "2.0", "id": 2, "result": {"echo": "next", "peer_id": CALLER}}


async def test_a_cancelled_call_tells_the_peer() -> None:
    async with channel_to_raw() as (channel, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.call, "block", {})
                sent = await peer.receive()
                nursery.cancel_scope.cancel()
            cancel = await peer.receive()
    assert cancel == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": sent["id"], "reason": "caller cancelled"}}


async def test_the_caller_of_a_peer_that_dies_mid_call_gets_peer_error_and_the_next_call_reopens() -> None:
    handler = Handler()
    async with channel_to(handler) as (channel, servers):
        with trio.fail_after(5):
            outcome: list[BaseException] = []

            async def call() -> None:
                try:
                    await channel.call("block", {"tag": "dies"})
                except PeerError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await handler.event(handler.started, "dies").wait()
                await servers[0].reset()  # the peer goes away mid-call
            await handler.event(handler.cancelled, "dies").wait()  # and so its handler ends
            assert len(outcome) == 1 and "connection lost during block" in str(outcome[0])
            assert (await channel.call("echo", {"value": "back"}))["echo"] == "back"
    assert len(servers) == 2  # a fresh stream for the next call


async def test_a_truncated_answer_is_never_a_result() -> None:
    async with channel_to_raw() as (channel, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def peer_side() -> None:
                    sent = await peer.receive()
                    whole = encode_frame({"jsonrpc": "2.0", "id": sent["id"], "result": {"big": "x" * 100}})
                    await peer.stream.write(whole[: len(whole) // 2])
                    await peer.stream.close()

                nursery.start_soon(peer_side)
                with pytest.raises(PeerError, match="in the middle of a frame"):
                    await channel.call("echo", {})


async def test_progress_goes_to_the_caller_it_belongs_to() -> None:
    handler = Handler()
    seen: dict[str, list[tuple[Any, Any]]] = {"a": [], "b": []}
    results: dict[str, Any] = {}

    def recorder(name: str) -> Callable[[dict[str, Any]], Any]:
        async def record(note: dict[str, Any]) -> None:
            seen[name].append((note["params"]["message"], note["params"]["progress"]))
        return record

    async with channel_to(handler) as (channel, _):
        with trio.fail_after(5):

            async def one(name: str) -> None:
                results[name] = await channel.call("progress", {"value": name}, on_notification=recorder(name))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "a")
                nursery.start_soon(one, "b")
                await handler.event(handler.started, "a").wait()
                await handler.event(handler.started, "b").wait()
                handler.gate.set()
    assert results == {"a": {"done": "a"}, "b": {"done": "b"}}
    assert seen == {"a": [("a", 1), ("a", 2)], "b": [("b", 1), ("b", 2)]}


async def test_progress_for_no_caller_is_ignored() -> None:
    async with channel_to_raw() as (channel, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def peer_side() -> None:
                    sent = await peer.receive()
                    for token in (999, "x", None):
                        await peer.send({"jsonrpc": "2.0", "method": "notifications/progress",
                                         "params": {"progressToken": token, "progress": 1}})
                    await peer.send({"jsonrpc": "2.0", "id": 999, "result": {}})  # nobody's answer
                    await peer.send({"jsonrpc": "2.0", "id": sent["id"], "result": {"ok": True}})

                nursery.start_soon(peer_side)
                assert await channel.call("echo", {}) == {"ok": True}


async def test_oversized_frames_are_answered_and_the_stream_survives() -> None:
    handler = Handler()
    async with serving(handler, max_frame_bytes=1024) as (peer, _, frame_errors):
        with trio.fail_after(5):
            await peer.stream.write(struct.pack(">I", 5000) + b"x" * 5000)  # skipped as it streams past
            await peer.send(request(1, "echo", value="x" * 2000))  # a well-formed request, too big
            await peer.send(request(2, "echo", value="small"))
            first, second, third = await peer.receive(), await peer.receive(), await peer.receive()
    assert [first["id"], first["error"]["code"]] == [None, -32600] and "exceeds the limit" in first["error"]["message"]
    assert [second["id"], second["error"]["code"]] == [None, -32600]
    assert third == {"jsonrpc": "2.0", "id": 2, "result": {"echo": "small", "peer_id": CALLER}}
    assert frame_errors == [1, 1] and [m["id"] for m in handler.seen] == [2]


async def test_a_length_beyond_the_hard_cap_ends_the_stream() -> None:
    handler = Handler()
    async with serving(handler) as (peer, returned, frame_errors):
        with trio.fail_after(5):
            await peer.stream.write(struct.pack(">I", HARD_CAP + 1))
            answer = await peer.receive()
            await returned.wait()  # the stream cannot go on: serve_stream has returned
    assert answer["error"]["code"] == -32600 and "hard cap" in answer["error"]["message"]
    assert frame_errors == [1]


async def test_an_oversized_answer_is_skipped_and_the_channel_stays_usable(
        autojump_clock: trio.testing.MockClock) -> None:
    async with channel_to_raw(max_frame_bytes=1024) as (channel, peer), trio.open_nursery() as nursery:

        async def peer_side() -> None:
            first = await peer.receive()
            await peer.send({"jsonrpc": "2.0", "id": first["id"], "result": {"big": "x" * 5000}})
            cancel = await peer.receive()  # the caller of the first gave up
            assert cancel["params"]["requestId"] == first["id"]
            second = await peer.receive()
            await peer.send({"jsonrpc": "2.0", "id": second["id"], "result": {"ok": True}})

        nursery.start_soon(peer_side)
        with trio.move_on_after(30) as waited:
            await channel.call("echo", {})  # its answer was too big: it never comes
        assert waited.cancelled_caught
        with trio.fail_after(5):
            assert await channel.call("echo", {}) == {"ok": True}


async def test_an_answer_beyond_the_hard_cap_fails_the_calls_in_flight() -> None:
    async with channel_to_raw() as (channel, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def peer_side() -> None:
                    await peer.receive()
                    await peer.stream.write(struct.pack(">I", HARD_CAP + 1))

                nursery.start_soon(peer_side)
                with pytest.raises(PeerError, match="beyond the hard cap"):
                    await channel.call("echo", {})
            assert await peer.stream.read(65536) == b""  # the channel reset its end of the stream


async def test_a_peer_that_leaves_cancels_its_requests() -> None:
    handler = Handler()
    async with serving(handler) as (peer, returned, _):
        with trio.fail_after(5):
            await peer.send(request(1, "block", tag="left"))
            await handler.event(handler.started, "left").wait()
            await peer.stream.close()
            await handler.event(handler.cancelled, "left").wait()
            await returned.wait()


async def test_notifications_reach_the_handler_in_order_and_get_no_answer() -> None:
    handler = Handler()
    async with serving(handler) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await peer.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
            await peer.send(request(1, "echo", value=1))
            answer = await peer.receive()
    assert answer["id"] == 1
    assert [m["method"] for m in handler.seen] == ["notifications/initialized", "notifications/roots/list_changed",
                                                   "echo"]


async def test_the_per_peer_budget_refills_with_time(autojump_clock: trio.testing.MockClock) -> None:
    budget = TokenBucket(rate=1.0, burst=2)
    async with serving(Handler(), budget=budget) as (peer, _, _):
        for ident in (1, 2, 3):
            await peer.send(request(ident, "echo", value=ident))
        answers = sorted([await peer.receive() for _ in range(3)], key=lambda a: a["id"])
        await trio.sleep(1)  # virtual time: one token back
        await peer.send(request(4, "echo", value=4))
        later = await peer.receive()
    assert ["result" in a for a in answers] == [True, True, False]
    assert answers[2]["error"] == {"code": -32010, "message": "too many requests (limit 1/s per peer)"}
    assert later["result"]["echo"] == 4


async def test_the_cap_on_requests_in_flight_and_duplicate_ids() -> None:
    handler = Handler()
    async with serving(handler, max_inflight=2) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(request(1, "block", tag=1))
            await peer.send(request(2, "block", tag=2))
            await handler.event(handler.started, 2).wait()
            await peer.send(request(1, "echo"))
            await peer.send(request(3, "echo"))
            duplicate, over = await peer.receive(), await peer.receive()
    assert duplicate["error"] == {"code": -32600, "message": "request id 1 is already in flight"}
    assert over["error"] == {"code": -32010, "message": "too many requests in flight (limit 2)"}


async def test_a_failed_send_is_peer_error_and_forgets_the_stream() -> None:
    class Broken(MemoryStream):
        async def write(self, data: bytes) -> None:
            raise trio.BrokenResourceError("gone")

    client, _ = stream_pair()
    broken = Broken(client._stream)

    async def open_stream() -> MemoryStream:
        return broken

    async with trio.open_nursery() as nursery:
        channel = PeerChannel("12D3KooWCallee", open_stream, nursery, max_frame_bytes=1024)
        with trio.fail_after(5), pytest.raises(PeerError, match="sending failed"):
            await channel.call("echo", {})
        assert channel._stream is None
        nursery.cancel_scope.cancel()


async def test_the_first_answer_to_a_call_counts() -> None:
    async with channel_to_raw() as (channel, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def peer_side() -> None:
                    sent = await peer.receive()
                    await peer.stream.write(encode_frame({"jsonrpc": "2.0", "id": sent["id"], "result": {"n": 1}})
                                            + encode_frame({"jsonrpc": "2.0", "id": sent["id"], "result": {"n": 2}}))

                nursery.start_soon(peer_side)
                assert await channel.call("echo", {}) == {"n": 1}


async def test_a_retired_stream_answers_its_calls_then_closes_and_the_next_calls_take_a_new_one() -> None:
    """What ``direct.py`` relies on when a direct connection appears: ``retire`` closes the stream
    only after its calls are answered (closed earlier, the peer would cancel them), and its end
    loses no call sent on the new stream."""
    release: dict[str, trio.Event] = {"old": trio.Event(), "new": trio.Event()}
    started: dict[str, trio.Event] = {"old": trio.Event(), "new": trio.Event()}

    async def handler(message: dict[str, Any], *, peer_id: str, notify: Any) -> dict[str, Any] | None:
        tag = message["params"]["tag"]
        started[tag].set()
        await release[tag].wait()
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"tag": tag}}

    served: list[trio.Event] = []
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def serve(server: MemoryStream, ended: trio.Event) -> None:
            await serve_stream(server, CALLER, handler, authorized=lambda peer: True, max_frame_bytes=1024 * 1024)
            ended.set()

        async def open_stream() -> MemoryStream:
            client, server = stream_pair()
            served.append(trio.Event())
            nursery.start_soon(serve, server, served[-1])
            return client

        channel = PeerChannel("12D3KooWCallee", open_stream, nursery, max_frame_bytes=1024 * 1024)

        async def call(tag: str) -> None:
            results.append(await channel.call("wait", {"tag": tag}))

        with trio.fail_after(5):
            async with trio.open_nursery() as calls:
                calls.start_soon(call, "old")
                await started["old"].wait()
                await channel.retire()
                calls.start_soon(call, "new")
                await started["new"].wait()
                assert len(served) == 2  # the new call took a new stream
                assert not served[0].is_set()  # the old one stays open while its call is in flight
                release["old"].set()
                await served[0].wait()  # answered, then closed: its server saw the end and returned
                assert results == [{"tag": "old"}]
                release["new"].set()  # the old stream's end lost nothing sent on the new one
            assert results == [{"tag": "old"}, {"tag": "new"}]
            assert not served[1].is_set()
        nursery.cancel_scope.cancel()
