"""When a kept HTTP-over-libp2p stream fails, a request is sent again only where that is safe.

A POST (every MCP request) that went out in full may have run on the peer: if its connection is cut
before the answer, it fails with a clear PeerError and is not sent again, so a tool never runs
twice. A GET in the same spot is sent again on a fresh stream, and so is any request whose kept
stream had ended before the request was written (the connection closed while the stream idled).

Two real nodes on 127.0.0.1: ``a`` serves a small ASGI app over ``/http/1.1``, ``b`` sends it
requests through its pool (``Node.http``). The fault, the connection cut while ``a`` holds the
request, is made by ``a`` closing its connection to ``b``. Bounded waits only, no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from tests.p2p.conftest import authorize, fake_handler, node_in, p2p_settings
from triomcp.errors import PeerError
from triomcp.p2p import Node, open_node

Message = MutableMapping[str, Any]


class _App:
    """``/`` answers ``ok``; ``/hold`` holds the request, the first ``holds`` times, until the
    stream ends (``held`` is set meanwhile), then answers ``ok``."""

    def __init__(self, holds: int = 1) -> None:
        self.served: list[tuple[str, str]] = []
        self.holds = holds
        self.held = trio.Event()

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        self.served.append((scope["method"], scope["path"]))
        await receive()
        if scope["path"] == "/hold" and self.holds > 0:
            self.holds -= 1
            self.held.set()
            await receive()  # http.disconnect, once the connection is gone
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _pair(tmp_path: Path, app: _App) -> AsyncIterator[tuple[Node, Node]]:
    async with open_node(p2p_settings(), tmp_path / "a", frame_handler=fake_handler, http_app=app) as a, \
            node_in(tmp_path / "b") as b:
        authorize(a, b)
        await b.connect(a.listen_addrs()[0])
        yield a, b


async def _send(node: Node, peer: str, method: str, target: str,
                on_stream: Callable[[Any], None] = lambda stream: None) -> tuple[int, bytes]:
    body = b'{"jsonrpc": "2.0"}' if method == "POST" else b""
    async with node.http.request(peer, method, target, [(b"host", b"peer")], body, on_stream=on_stream) as response:
        data = b"".join([chunk async for chunk in response.chunks()])
    return response.status, data


async def _cut_when_held(a: Node, b: Node, app: _App) -> None:
    await app.held.wait()
    await a.host.disconnect(ID.from_base58(b.peer_id))


async def test_a_post_cut_off_after_it_was_sent_runs_once_and_fails_clearly(tmp_path: Path) -> None:
    app = _App()
    async with _pair(tmp_path, app) as (a, b):
        with trio.fail_after(20):
            assert await _send(b, a.peer_id, "POST", "/") == (200, b"ok")
            assert b.http.idle(a.peer_id) == 1  # the next request goes out on this kept stream
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cut_when_held, a, b, app)
                with pytest.raises(PeerError, match="the peer may have run it"):
                    await _send(b, a.peer_id, "POST", "/hold")
            assert app.served.count(("POST", "/hold")) == 1  # not sent again
            await b.connect(a.listen_addrs()[0])
            assert await _send(b, a.peer_id, "POST", "/") == (200, b"ok")


@pytest.mark.parametrize(("method", "runs"), [("GET", 2), ("POST", 1)])
async def test_a_kept_stream_that_breaks_after_the_request_is_replaced_for_a_get_only(
        tmp_path: Path, method: str, runs: int) -> None:
    app = _App()
    async with _pair(tmp_path, app) as (a, b):
        with trio.fail_after(20):
            assert await _send(b, a.peer_id, method, "/") == (200, b"ok")
            streams: list[Any] = []

            async def break_when_held() -> None:
                # The fault: a resets its end of the stream while it holds the request.
                await app.held.wait()
                ours = streams[0].muxed_stream
                theirs = next(c.muxed_conn for c in a.host.get_network().connections[ID.from_base58(b.peer_id)])
                await theirs.streams[ours.stream_id].reset()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(break_when_held)
                if method == "GET":  # sent again on a fresh stream over the same connection
                    assert await _send(b, a.peer_id, method, "/hold", streams.append) == (200, b"ok")
                else:
                    with pytest.raises(PeerError, match="the peer may have run it"):
                        await _send(b, a.peer_id, method, "/hold", streams.append)
            assert app.served.count((method, "/hold")) == runs
            assert len(streams) == runs


async def test_a_post_on_a_kept_stream_whose_connection_closed_goes_out_on_a_fresh_one(tmp_path: Path) -> None:
    app = _App(holds=0)
    async with _pair(tmp_path, app) as (a, b):
        with trio.fail_after(20):
            assert await _send(b, a.peer_id, "POST", "/") == (200, b"ok")
            assert (b.http.opened, b.http.idle(a.peer_id)) == (1, 1)
            await a.host.disconnect(ID.from_base58(b.peer_id))
            while a.peer_id in b.connected_peers():  # b sees the connection end
                await b.wait_peers_changed()
            await b.connect(a.listen_addrs()[0])
            assert await _send(b, a.peer_id, "POST", "/") == (200, b"ok")
            assert b.http.opened == 2  # the dead kept stream was not used
            assert app.served == [("POST", "/"), ("POST", "/")]  # each sent once
