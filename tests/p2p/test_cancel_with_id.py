"""A ``notifications/cancelled`` that carries an ``id`` is a request: ``serve_stream`` answers it
(docs/reliability.md, "Defects found", 3) as the HTTP engine does, and it cancels nothing. Over
``trio.testing`` memory streams; waits are events, each test bounded (``autojump_clock``)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from tests.mcp.helpers import MODERN, meta, post
from tests.p2p.test_rpc import Handler, request, serving
from triomcp.mcp.engine import Engine
from triomcp.mcp.registry import Registry
from triomcp.p2p.admit import CANCELLED
from triomcp.server.peer_mcp import PeerMcpHandler


def cancel(target: Any, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": CANCELLED, "params": {"requestId": target}, **extra}


async def test_a_cancel_carrying_an_id_is_answered_and_cancels_nothing(autojump_clock: trio.testing.MockClock) -> None:
    handler = Handler()
    async with serving(handler) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(request(1, "block", tag="kept"))
            await handler.event(handler.started, "kept").wait()
            await peer.send(cancel(1, id=-1))  # the fuzzer's input 1:670
            answer = await peer.receive()
            assert answer == {"jsonrpc": "2.0", "id": -1, "error": {"code": -32601, "message": "unknown"}}
            assert handler.seen[-1] == cancel(1, id=-1)  # run as the request it is, its method unchanged
            assert "kept" not in handler.cancelled  # request 1 is still in flight
            await peer.send(cancel(1))  # a real cancel (a notification) still cancels it, and sends nothing
            await handler.event(handler.cancelled, "kept").wait()
            await peer.send(request(2, "echo", value="after"))
            assert (await peer.receive())["id"] == 2  # the next frame is the next request's answer


@pytest.mark.parametrize(("extra", "code"), [
    ({"id": True}, -32600),  # an id that is not a string or an integer: Invalid Request, id null
    ({"id": 1}, -32600),  # an id already in flight
])
async def test_a_cancel_carrying_a_bad_id_gets_the_request_error(extra: dict[str, Any], code: int,
                                                                 autojump_clock: trio.testing.MockClock) -> None:
    handler = Handler()
    async with serving(handler) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(request(1, "block", tag="kept"))
            await handler.event(handler.started, "kept").wait()
            await peer.send(cancel(1, **extra))
            answer = await peer.receive()
            assert answer["error"]["code"] == code
            assert answer["id"] == (None if extra["id"] is True else extra["id"])
            assert "kept" not in handler.cancelled


async def test_a_cancel_carrying_an_id_from_a_peer_not_authorized_is_refused(
        autojump_clock: trio.testing.MockClock) -> None:
    async with serving(Handler(), authorized=lambda peer: False) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(cancel(1, id=5))
            answer = await peer.receive()
    assert answer["id"] == 5 and answer["error"]["code"] == -32001


@pytest.mark.parametrize("with_meta", [False, True])
async def test_the_answer_is_the_one_http_gives(with_meta: bool, autojump_clock: trio.testing.MockClock) -> None:
    """The same engine answers the frame over libp2p and the POST over HTTP (modern era): -32602
    without ``_meta``, -32601 with it (a notification's method is not a request method)."""
    engine = Engine(Registry())
    params: dict[str, Any] = {"requestId": 2, **({"_meta": meta()} if with_meta else {})}
    message = {"jsonrpc": "2.0", "method": CANCELLED, "params": params, "id": -1}
    over_http = post(engine, message, {"mcp-protocol-version": MODERN, "mcp-method": CANCELLED}).body
    async with serving(PeerMcpHandler(engine)) as (peer, _, _):
        with trio.fail_after(5):
            await peer.send(message)
            over_libp2p = await peer.receive()
    assert over_libp2p == over_http
    assert over_libp2p["error"]["code"] == (-32601 if with_meta else -32602)
