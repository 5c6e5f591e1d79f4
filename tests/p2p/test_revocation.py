"""Revoking a peer ends its use of HTTP over libp2p at once, pooled streams included.

Two real nodes on 127.0.0.1: ``a`` serves a small ASGI app over ``/http/1.1``; ``b`` sends it
requests through its pool of streams (``Node.http``). Bounded waits only, no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.p2p.conftest import authorize, fake_handler, node_in, p2p_settings
from triomcp.errors import PeerError, RemoteError
from triomcp.p2p import Node, open_node

Message = MutableMapping[str, Any]


class _App:
    """``/`` answers ``ok``; ``/slow`` sends ``first``, then ``second`` once ``go`` is set."""

    def __init__(self) -> None:
        self.served: list[str] = []
        self.go = trio.Event()
        self.ended: list[str] = []

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        self.served.append(scope["path"])
        await receive()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            if scope["path"] == "/slow":
                await send({"type": "http.response.body", "body": b"first", "more_body": True})
                await self.go.wait()
                await send({"type": "http.response.body", "body": b"second", "more_body": True})
            await send({"type": "http.response.body", "body": b"ok"})
            self.ended.append("sent")
        except OSError as exc:
            self.ended.append(str(exc))
            raise


@asynccontextmanager
async def _serving(path: Path, app: _App) -> AsyncIterator[Node]:
    async with open_node(p2p_settings(), path, frame_handler=fake_handler, http_app=app) as node:
        yield node


async def _get(node: Node, peer: str, target: str = "/") -> tuple[int, bytes]:
    async with node.http.request(peer, "GET", target, [(b"host", b"peer")], b"") as response:
        body = b"".join([chunk async for chunk in response.chunks()])
    return response.status, body


async def test_a_revoked_peer_is_refused_on_the_streams_it_pooled_and_nothing_else_changes(tmp_path: Path) -> None:
    app = _App()
    async with _serving(tmp_path / "a", app) as a, node_in(tmp_path / "b") as b:
        authorize(a, b)
        authorize(b, a)
        with trio.fail_after(20):
            await b.connect(a.listen_addrs()[0])
            async with trio.open_nursery() as nursery:  # two at once: two streams, both kept
                for _ in range(2):
                    nursery.start_soon(_get, b, a.peer_id)
            assert await _get(b, a.peer_id) == (200, b"ok")
            assert (b.http.opened, b.http.idle(a.peer_id)) == (2, 2)
            served = len(app.served)

            a.authorized.revoke(b.peer_id)
            with trio.fail_after(2), pytest.raises(PeerError):  # at once, not after the pool's 20 s
                await _get(b, a.peer_id)
            assert len(app.served) == served  # the app never saw it
            # The pooled stream was closed unanswered, the fresh one refused at its open, and b
            # dropped the stream it still kept for a: a refusing peer's streams are of no use.
            assert (b.http.opened, b.http.idle(a.peer_id)) == (3, 0)
            with trio.fail_after(2), pytest.raises(PeerError):
                await _get(b, a.peer_id)

            # Nothing else changed: the connection, b's MCP calls to a refused as before any
            # authorization, a's calls to b (b still authorizes a), and b again once re-authorized.
            assert a.peer_id in b.connected_peers()
            with pytest.raises(RemoteError, match="not authorized"):
                await b.call(a.peer_id, "echo", {"value": 1})
            assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
            a.authorized.authorize(b.peer_id, "again")
            assert await _get(b, a.peer_id) == (200, b"ok")


async def test_a_response_still_being_sent_to_a_revoked_peer_ends(tmp_path: Path) -> None:
    app = _App()
    async with _serving(tmp_path / "a", app) as a, node_in(tmp_path / "b") as b:
        authorize(a, b)
        with trio.fail_after(20):
            await b.connect(a.listen_addrs()[0])
            async with b.http.request(a.peer_id, "GET", "/slow", [(b"host", b"peer")], b"") as response:
                chunks = response.chunks()
                assert await chunks.__anext__() == b"first"
                a.authorized.revoke(b.peer_id)
                app.go.set()
                with trio.fail_after(2), pytest.raises(PeerError):
                    async for _ in chunks:
                        pass
                await chunks.aclose()
            assert app.ended == ["the peer is no longer authorized"]
            assert b.http.idle(a.peer_id) == 0
