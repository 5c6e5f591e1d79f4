"""What HTTP over libp2p writes and reads per response: a sized response's head goes with its body
(one write, so one yamux frame), a streamed one's head goes at once, and the client half says
whether a chunk is the body's last (a relay then ends its own response with it)."""

from __future__ import annotations

from typing import Any

import trio

from tests.p2p.streams import MemoryStream, stream_pair
from triomcp.p2p.http import HttpStreams
from triomcp.p2p.http_serve import serve_http


class CountingStream(MemoryStream):
    def __init__(self, inner: MemoryStream) -> None:
        super().__init__(inner._stream)
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        await super().write(data)


def sized_app(body: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    return app


async def test_a_sized_response_is_one_write_and_its_last_chunk_says_so() -> None:
    client_end, server_end = stream_pair()
    server = CountingStream(server_end)
    body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_http(server, sized_app(body), peer_id="peer", max_body_bytes=1024,
                                              head_timeout=5, write_timeout=5))
        streams = HttpStreams(lambda peer: _ready(client_end), write_timeout=5)
        for _ in range(3):  # on the same (pooled) stream each time
            before = len(server.writes)
            async with streams.request("peer", "POST", "/mcp", [(b"host", b"peer")], b"{}") as response:
                assert response.status == 200 and not response.finished
                got = []
                async for chunk in response.chunks():
                    got.append((chunk, response.finished))
            assert got == [(body, True)]
            assert len(server.writes) - before == 1, server.writes[before:]
            assert server.writes[-1].startswith(b"HTTP/1.1 200") and server.writes[-1].endswith(body)
        assert streams.opened == 1
        await streams.aclose()
        nursery.cancel_scope.cancel()


async def test_a_streamed_response_sends_its_head_at_once_and_its_chunks_are_not_last_until_the_end() -> None:
    client_end, server_end = stream_pair()
    go_on, both_seen = trio.Event(), trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await go_on.wait()  # the client has the head before any body is written
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await both_seen.wait()  # the end is sent only once the client has both events
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_http(server_end, app, peer_id="peer", max_body_bytes=1024,
                                              head_timeout=5, write_timeout=5))
        streams = HttpStreams(lambda peer: _ready(client_end), write_timeout=5)
        with trio.fail_after(10):
            async with streams.request("peer", "POST", "/mcp", [(b"host", b"peer")], b"{}") as response:
                assert response.status == 200
                go_on.set()
                seen = []
                async for chunk in response.chunks():
                    seen.append((chunk, response.finished))
                    if b"".join(c for c, _ in seen) == b"data: 1\n\ndata: 2\n\n":
                        both_seen.set()
        joined = b"".join(chunk for chunk, _ in seen)
        assert joined == b"data: 1\n\ndata: 2\n\n"
        assert all(not last for _, last in seen) and response.finished  # the end came after them, on its own
        await streams.aclose()
        nursery.cancel_scope.cancel()


async def _ready(stream: MemoryStream) -> MemoryStream:
    return stream
