"""A tiny HTTP/1.1 client on a Trio socket and h11, for reading SSE streams in tests.

httpx's streaming iterators are nested async generators that stay open when a
test stops reading early; under Trio that surfaces as ResourceWarnings. This
client has no generators: it reads exactly what a test asks for.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import h11
import trio


class SseResponse:
    def __init__(self, stream: trio.SocketStream, conn: h11.Connection, response: h11.Response) -> None:
        self._stream = stream
        self._conn = conn
        self.status = response.status_code
        self.headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        self._buffer = b""
        self.ended = False

    async def _more(self) -> bool:
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await self._stream.receive_some(65536)
                self._conn.receive_data(data)
                if not data:
                    self.ended = True
                    return False
                continue
            if isinstance(event, h11.Data):
                self._buffer += bytes(event.data)
                return True
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self.ended = True
                return False

    async def read_body(self) -> bytes:
        while await self._more():
            pass
        return self._buffer

    async def read(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` events as dicts with ``id``/``event``/``data`` (data JSON-decoded)."""
        events: list[dict[str, Any]] = []
        while len(events) < count:
            block, sep, rest = self._buffer.partition(b"\n\n")
            if not sep:
                if not await self._more():
                    raise EOFError(f"stream ended after {len(events)} of {count} events")
                continue
            self._buffer = rest
            event: dict[str, Any] = {}
            for line in block.decode().split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                event[name] = (json.loads(value) if value else None) if name == "data" else value
            if event:
                events.append(event)
        return events


@contextlib.asynccontextmanager
async def request(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes | dict[str, Any] = b""
) -> AsyncIterator[SseResponse]:
    """Send one request on a fresh connection; the connection closes when the block ends."""
    parts = urlsplit(url)
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    async with stream:
        conn = h11.Connection(our_role=h11.CLIENT)
        all_headers = [("host", parts.netloc), ("content-length", str(len(raw))), *headers.items()]
        await stream.send_all(conn.send(h11.Request(method=method, target=path, headers=all_headers)))
        await stream.send_all(conn.send(h11.Data(data=raw)) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                break
        yield SseResponse(stream, conn, event)
