"""HTTP/1.1 over libp2p streams (``/http/1.1``): the server half, an ASGI app for a peer's requests.

:func:`serve_http` runs the app for the requests read from one stream, one after another, as an
HTTP server would. The scope names the peer (``scope["triomcp.peer"]``) and takes the client
address from the ``triomcp-forwarded-for`` header, which only an authorized peer can send (the
node refuses every other peer's stream). The end of the stream (or its reset) is the client's
disconnect. One task reads the stream for its whole life and is never cancelled (see
:mod:`triomcp.p2p.http`); timeouts wait on what it hands over, not on the stream. Once done, the
server closes its side and waits for the peer to close its own, resetting the stream only if
the peer does not within the idle timeout.

The peer's authorization is checked when the stream opens, and again for every request and before
every write of a response: a peer revoked since it opened a stream (one kept in its pool) has its
next request refused as a stream is at its open, closed unanswered, and a response still being
sent to it ends there (as if it had disconnected).

Bounds: heads 64 KiB, a request body ``max_body_bytes`` (413), the body ``head_timeout`` after
its head, an idle stream closed after ``head_timeout`` x 6.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
import trio

from triomcp.errors import PeerError
from triomcp.p2p._errors import close_quietly
from triomcp.p2p.http import FORWARDED_FOR, MAX_HEAD_BYTES, Headers, read_some, reset, write_all
from triomcp.p2p.rpc import Stream

__all__ = ["MAX_STREAMS_PER_PEER", "AsgiApp", "HttpServer", "serve_http"]

log = logging.getLogger("triomcp.p2p.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
MAX_STREAMS_PER_PEER = 1024
"""``/http/1.1`` streams one peer may hold open at once (each carries one request at a time)."""


class HttpServer:
    """A node's ``/http/1.1`` handler: ``app`` for the peers ``authorized`` allows, nothing escapes."""

    def __init__(self, app: AsgiApp, *, authorized: Callable[[str], bool], max_body_bytes: int,
                 timeout: float) -> None:
        self.app = app
        self.authorized = authorized
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self._open: dict[str, int] = {}

    async def on_stream(self, stream: Any) -> None:
        """Serve one peer's stream (a libp2p NetStream)."""
        peer_id = "?"
        counted = False
        try:
            peer_id = stream.muxed_conn.peer_id.to_base58()
            if not self.authorized(peer_id):
                return
            if self._open.get(peer_id, 0) >= MAX_STREAMS_PER_PEER:
                log.info("peer %s: refused an HTTP stream: %d open", peer_id[:16], MAX_STREAMS_PER_PEER)
                return
            self._open[peer_id] = self._open.get(peer_id, 0) + 1
            counted = True
            await serve_http(stream, self.app, peer_id=peer_id, max_body_bytes=self.max_body_bytes,
                             head_timeout=self.timeout, write_timeout=self.timeout,
                             authorized=lambda: self.authorized(peer_id))
        except Exception:
            log.exception("HTTP stream handler failed")
        finally:
            if counted:
                self._open[peer_id] -= 1
                if not self._open[peer_id]:
                    del self._open[peer_id]
            await close_quietly(stream)


class _Incoming:
    """The stream's bytes, from the one task that reads it; ``ended`` once the peer closed or reset it."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.ended = trio.Event()
        self._send, self._receive = trio.open_memory_channel[bytes](1)

    async def read_all(self) -> None:
        async with self._send:
            while data := await read_some(self.stream):
                await self._send.send(data)
        self.ended.set()

    async def next_event(self, conn: h11.Connection) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                conn.receive_data(await self._receive.receive())
            except trio.EndOfChannel:
                conn.receive_data(b"")


async def serve_http(stream: Stream, app: AsgiApp, *, peer_id: str, max_body_bytes: int,
                     head_timeout: float, write_timeout: float,
                     authorized: Callable[[], bool] = lambda: True) -> None:
    """Serve the requests a peer sends on ``stream`` with ``app`` until the stream ends, or until
    ``authorized()`` turns false (asked before each request and each write of a response)."""
    incoming = _Incoming(stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(incoming.read_all)
        try:
            await _serve(incoming, app, peer_id=peer_id, max_body_bytes=max_body_bytes, head_timeout=head_timeout,
                         write_timeout=write_timeout, authorized=authorized)
        finally:
            await close_quietly(stream)
            with trio.move_on_after(head_timeout * 6) as waited:  # the peer reads what was sent, then closes
                await incoming.ended.wait()
            if waited.cancelled_caught:  # it did not: end the reader's pending read (never cancel a read)
                await reset(stream)


async def _serve(incoming: _Incoming, app: AsgiApp, *, peer_id: str, max_body_bytes: int, head_timeout: float,
                 write_timeout: float, authorized: Callable[[], bool]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    stream = incoming.stream
    try:
        while True:
            event: Any = None
            with trio.move_on_after(head_timeout * 6):  # an idle stream is closed after this long
                event = await incoming.next_event(conn)
            if not isinstance(event, h11.Request):
                return  # idle, closed, or something other than a request
            if not authorized():  # revoked since the stream opened: closed unanswered, as at its open
                log.info("peer %s: refused an HTTP request: no longer authorized", peer_id[:16])
                return
            with trio.fail_after(head_timeout):
                body = await _read_body(conn, incoming, max_body_bytes)
            if body is None:
                await write_all(stream, _simple(conn, 413, b"request body too large"), write_timeout)
                return
            await _run_one(conn, incoming, app, event, body, peer_id=peer_id, write_timeout=write_timeout,
                           authorized=authorized)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        with contextlib.suppress(Exception):
            await write_all(stream, _simple(conn, exc.error_status_hint, str(exc).encode()), write_timeout)
    except (trio.TooSlowError, PeerError) as exc:
        log.debug("http stream from %s: %s", peer_id[:16], exc)


async def _read_body(conn: h11.Connection, incoming: _Incoming, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await incoming.next_event(conn)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise PeerError("the stream ended inside a request body")


def _simple(conn: h11.Connection, status: int, text: bytes) -> bytes:
    if conn.our_state is not h11.SEND_RESPONSE:
        return b""
    head = conn.send(h11.Response(status_code=status, headers=[(b"content-type", b"text/plain"),
                                                                 (b"content-length", str(len(text)).encode()),
                                                                 (b"connection", b"close")]))
    return (head or b"") + (conn.send(h11.Data(data=text)) or b"") + (conn.send(h11.EndOfMessage()) or b"")


def _client_of(value: bytes | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.decode("latin-1").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _scope(request: h11.Request, peer_id: str) -> Scope:
    path, _, query = bytes(request.target).partition(b"?")
    headers: Headers = []
    client: tuple[str, int] | None = None
    for name, value in request.headers:
        if name == FORWARDED_FOR:
            client = _client_of(bytes(value))
        else:
            headers.append((bytes(name), bytes(value)))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": request.method.decode("ascii"), "scheme": "http",
        "path": path.decode("latin-1"), "raw_path": path, "query_string": query, "root_path": "",
        "headers": headers, "client": client, "server": None, "triomcp.peer": peer_id,
    }


async def _run_one(conn: h11.Connection, incoming: _Incoming, app: AsgiApp, request: h11.Request, body: bytes, *,
                   peer_id: str, write_timeout: float, authorized: Callable[[], bool]) -> None:
    stream = incoming.stream
    body_given = False
    held = b""  # a sized response's head, written with its first body (one frame, not two)

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await incoming.ended.wait()  # the peer sends nothing before the answer ends: its end is a disconnect
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal held
        if incoming.ended.is_set():
            raise OSError("the peer closed the stream")
        if not authorized():  # revoked meanwhile: what is left of the response is not sent
            raise OSError("the peer is no longer authorized")
        if message["type"] == "http.response.start":
            out = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            data = conn.send(h11.Response(status_code=message["status"], headers=out))
            if any(k == b"content-length" for k, _ in out):  # its body follows at once: one write
                held = data or b""
                return
        elif message["type"] == "http.response.body":
            data = conn.send(h11.Data(data=message["body"])) if message.get("body") else b""
            if not message.get("more_body", False):
                data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
            data, held = held + (data or b""), b""
        else:
            return
        try:
            await write_all(stream, data, write_timeout)
        except Exception as exc:
            raise OSError(f"writing to the peer: {exc}") from None

    try:
        await app(_scope(request, peer_id), receive, send)
    except OSError as exc:
        log.debug("a request from %s: %s", peer_id[:16], exc)
    if conn.our_state is h11.SEND_RESPONSE and authorized():  # the app sent nothing at all
        try:
            await write_all(stream, _simple(conn, 500, b"no response"), write_timeout)
        except Exception as exc:  # the peer is gone (the app returned on its disconnect, say)
            log.debug("a request from %s ended with no response: %s", peer_id[:16], exc)
    elif conn.our_state is h11.SEND_BODY:  # the app ended without its last chunk
        conn.send_failed()
