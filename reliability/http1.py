"""A lean HTTP/1.1 client on Trio for the load clients (:mod:`reliability.load_clients`): one
persistent connection (:class:`Connection`, a ``trio.SocketStream`` framed by ``h11``), requests
whose head is built once (:class:`Head`) and whose JSON body is a template where only the JSON-RPC
id changes (:class:`Body`), and answers read whole (:class:`Response`, its JSON from a JSON body or
from the ``data:`` of a ``text/event-stream`` one).

Why not httpx: it spends about 0.7-0.8 ms of CPU on a call, close to what the node spends
answering it, on a machine whose cores the clients share with the node. Here a call costs h11's
framing (writing the head of a cached ``h11.Request`` event, parsing the answer) and one JSON
decode (pydantic-core's, :func:`triomcp.mcp.jsonrpc.decode`).

A request that gets no answer raises an :class:`HTTPError` named as httpx names the same failure
(``ConnectError``, ``WriteError``, ``ReadError``, ``RemoteProtocolError``), so the load clients'
error kinds stay what they were. Whatever ends a request early (an error, a cancellation such as
its timeout) closes the connection: the next request opens a new one. So does an answer after
which the node closes the connection (``connection: close``), and a connection the node closed
while it was idle is noticed (readable before a request is sent) and replaced without an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from triomcp.errors import ParseError
from triomcp.mcp import jsonrpc

__all__ = [
    "Body",
    "ConnectError",
    "Connection",
    "HTTPError",
    "Head",
    "ReadError",
    "RemoteProtocolError",
    "Response",
    "WriteError",
    "address",
]

READ_SIZE = 65536
"""Bytes asked of the socket per read: an MCP answer of the load clients fits in one."""
_ID = "\x00id\x00"
"""What stands for the JSON-RPC id in a :class:`Body` template (never in a real request)."""


class HTTPError(Exception):
    """A request that got no answer (its kind is the class's name, as httpx's would be)."""


class ConnectError(HTTPError):
    """The connection could not be opened."""


class WriteError(HTTPError):
    """The request could not be written."""


class ReadError(HTTPError):
    """The answer could not be read."""


class RemoteProtocolError(HTTPError):
    """The node closed the connection before its answer was whole, or broke HTTP/1.1."""


def address(url: str) -> tuple[str, int]:
    """Host and port of an ``http://host:port`` base URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an http:// URL: {url!r}")
    return parts.hostname, parts.port or 80


class Head:
    """A request's method, target and headers, checked once: one ``h11.Request`` event per body
    length (the length is the only header that changes), kept and sent again."""

    def __init__(self, method: str, target: str, host: str, headers: Mapping[str, str]) -> None:
        self.method, self.target = method, target
        self._headers = [("host", host), *headers.items()]
        self._events: dict[int, h11.Request] = {}

    def event(self, length: int) -> h11.Request:
        event = self._events.get(length)
        if event is None:
            headers = [*self._headers, ("content-length", str(length))] if length else self._headers
            event = self._events[length] = h11.Request(method=self.method, target=self.target, headers=headers)
        return event


class Body:
    """A JSON-RPC message encoded once, with its id a hole: :meth:`with_id` fills it (an int)."""

    def __init__(self, message: Mapping[str, Any]) -> None:
        encoded = jsonrpc.dumps({**message, "id": _ID})
        hole = jsonrpc.dumps(_ID)
        if encoded.count(hole) != 1:
            raise ValueError(f"the id placeholder is not once in {encoded!r}")
        self._before, _, self._after = encoded.partition(hole)

    def with_id(self, ident: int) -> bytes:
        return b"%s%d%s" % (self._before, ident, self._after)


class Response:
    """An answer: its status, its headers (lower-case names, bytes) and its whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def json(self) -> Any:
        """The body's JSON; of a ``text/event-stream`` body, the JSON-RPC response among its events
        (their ``data:``), else its last event's. ValueError when there is none, or it is not JSON."""
        if not self.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            return _decode(self.body)
        messages = [_decode(data) for data in _sse_data(self.body)]
        for message in messages:
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return message
        if not messages:
            raise ValueError("an event stream without data")
        return messages[-1]


def _decode(body: bytes) -> Any:
    try:
        return jsonrpc.decode(body)
    except ParseError as exc:
        raise ValueError(str(exc)) from None


def _sse_data(body: bytes) -> list[bytes]:
    """The data of each event of an event stream (its ``data:`` lines, joined by newlines)."""
    events: list[bytes] = []
    lines: list[bytes] = []
    for line in [*body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), b""]:
        if not line:
            if lines:
                events.append(b"\n".join(lines))
                lines = []
        elif line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return events


class Connection:
    """One client's HTTP/1.1 connection to ``host:port``, opened on its first request and kept
    open between requests (see the module's doc for when it is replaced). One request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.opened = 0
        """Connections opened so far."""
        self._stream: trio.SocketStream | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def request(self, head: Head, body: bytes = b"") -> Response:
        """Send one request, read its whole answer. Raises :class:`HTTPError` if there is none."""
        stream = self._stream
        if stream is not None and stream.socket.is_readable():
            self.close()  # closed by the node while idle (or it sent what nobody asked for)
            stream = None
        if stream is None:
            stream = await self._open()
        try:
            out = self._h11.send(head.event(len(body)))
            if body:
                out += self._h11.send(h11.Data(data=body))
            out += self._h11.send(h11.EndOfMessage())
            try:
                await stream.send_all(out)
            except (trio.BrokenResourceError, OSError) as exc:
                raise WriteError(str(exc) or type(exc).__name__) from exc
            return await self._answer(stream)
        except BaseException:
            self.close()
            raise

    async def _open(self) -> trio.SocketStream:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        self._stream, self._h11 = stream, h11.Connection(h11.CLIENT)
        self.opened += 1
        return stream

    async def _answer(self, stream: trio.SocketStream) -> Response:
        conn = self._h11
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, OSError) as exc:
                    raise ReadError(str(exc) or type(exc).__name__) from exc
                conn.receive_data(data)
            elif type(event) is h11.Response:
                response = event
            elif type(event) is h11.Data:
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise RemoteProtocolError("Server disconnected without sending a response.")
            # an h11.InformationalResponse (1xx) is skipped: the answer follows
        assert response is not None  # h11 gives the Response before its body's end
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the node closes it after this answer
            self.close()
        return Response(response.status_code, dict(response.headers), chunks[0] if len(chunks) == 1
                        else b"".join(chunks))

    def close(self) -> None:
        """Close the connection now (the next request opens another)."""
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None
