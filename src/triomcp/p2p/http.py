"""HTTP/1.1 over libp2p streams (``/http/1.1``, the libp2p HTTP spec's protocol id): the client half.

The bytes on a stream are plain HTTP/1.1, read and written with ``h11``; a stream carries one
request after another (keep-alive), never two at once. The server half, which runs an ASGI app
for a peer's requests, is :mod:`triomcp.p2p.http_serve`.

:class:`HttpStreams` sends one request to a peer and hands the response on as it arrives
(:class:`Response`), over a stream kept from an earlier request when one is idle. A peer's idle
streams are dropped (:meth:`HttpStreams.drop`) when a fresh stream to it fails, and when this node
revokes it (the server's lifespan wires ``AuthorizedPeers.on_revoked`` to it).

Rules both halves keep:

- a read of a libp2p stream is never cancelled: a read cancelled halfway through its window update
  breaks the peer's whole connection. A request is abandoned by *closing* its stream: the peer takes
  the end as its client's disconnect and closes its side, which ends the pending read here. Streams
  are reset only after an error (a reset racing the peer's writes has left py-libp2p 0.8.1 unable
  to close that connection's socket);
- every write is shielded and bounded in time, for the same reason;
- heads are at most 64 KiB (``h11``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from triomcp.errors import PeerError
from triomcp.p2p._errors import close_quietly
from triomcp.p2p.rpc import Stream

__all__ = ["FORWARDED_FOR", "HOP_BY_HOP", "HTTP_PROTOCOL", "Headers", "HttpStreams", "Response", "reset",
           "write_all"]

log = logging.getLogger("triomcp.p2p.http")

HTTP_PROTOCOL = "/http/1.1"
FORWARDED_FOR = b"triomcp-forwarded-for"
"""``host:port`` of the HTTP client a relaying node serves (trusted from authorized peers only)."""
MAX_HEAD_BYTES = 64 * 1024
READ_SIZE = 65536
IDLE_STREAMS_PER_PEER = 32
CLIENT_IDLE_SECONDS = 20.0
"""A pooled stream unused this long is closed; a server keeps an idle stream open longer (30 s)."""
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                        b"proxy-connection", b"proxy-authenticate", b"proxy-authorization", b"content-length"})
"""Headers that describe one connection, not the message: never passed on as they came."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods sent again on a fresh stream when a kept stream fails after the whole request went out
(RFC 9110, 9.2.2); any other request is sent again only if it never left (a POST may have run)."""

Headers = list[tuple[bytes, bytes]]

_MAY_HAVE_RUN = " (after the request was sent: the peer may have run it)"


async def write_all(stream: Stream, data: bytes | None, limit_s: float) -> None:
    """Write all of ``data``, shielded from cancellation and bounded in time."""
    if not data:
        return
    with trio.CancelScope(shield=True), trio.fail_after(limit_s):
        await stream.write(data)


async def read_some(stream: Stream) -> bytes:
    """Bytes from the stream; b"" at its end (libp2p signals the end, a reset included, with exceptions)."""
    try:
        return await stream.read(READ_SIZE)
    except Exception as exc:
        log.debug("http stream read ended: %s", exc)
        return b""


async def reset(stream: Stream) -> None:
    """Reset the stream (shielded, bounded): the peer sees it end, a pending read here ends."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception as exc:
            log.debug("resetting an http stream: %s", exc)


def _dead(stream: Stream) -> bool:
    """Has a kept stream, or its connection, already ended (the peer closed or reset it, the
    connection is closed)? Looked at before reuse, so a request is not sent into one."""
    muxed = getattr(stream, "muxed_stream", None)
    if muxed is None:
        return False
    if any(getattr(muxed, flag, False) for flag in ("recv_closed", "send_closed", "reset_received", "closed")):
        return True
    is_closed = getattr(getattr(muxed, "muxed_conn", None), "is_closed", None)
    return bool(is_closed) if not callable(is_closed) else bool(is_closed())


async def _next_event(conn: h11.Connection, stream: Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await read_some(stream))


@dataclass
class _Pooled:
    stream: Stream
    conn: h11.Connection
    since: float


@dataclass
class Response:
    """A response being received: ``status`` and ``headers`` now, the body from :meth:`chunks`."""

    status: int
    headers: Headers
    _conn: h11.Connection
    _stream: Stream
    _finished: bool = field(default=False)
    _next: Any = field(default=None)

    @property
    def finished(self) -> bool:
        """Has the whole body arrived? Already true while the last chunk is handed on, when the
        end of the body came with it (a relay then sends that chunk as the last one)."""
        return self._finished

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives; PeerError if the stream ends (or is reset) before the body does."""
        try:
            while True:
                event = self._next or await _next_event(self._conn, self._stream)
                self._next = None
                if isinstance(event, h11.Data):
                    after = self._conn.next_event()  # what came with it, read no further
                    if isinstance(after, h11.EndOfMessage):
                        self._finished = True
                        yield bytes(event.data)
                        return
                    self._next = None if after is h11.NEED_DATA else after
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._finished = True
                    return
                else:
                    raise PeerError("the peer's stream ended inside the response")
        except h11.RemoteProtocolError as exc:
            raise PeerError(f"the peer answered with broken HTTP: {exc}") from None


class HttpStreams:
    """Requests to peers over ``/http/1.1``, on pooled streams (one request at a time each)."""

    def __init__(self, open_stream: Callable[[str], Awaitable[Stream]], *, write_timeout: float) -> None:
        self._open = open_stream
        self._idle: dict[str, list[_Pooled]] = {}
        self._drops: dict[str, int] = {}
        """Times each peer's streams were dropped: a stream taken before a drop is not kept after."""
        self.write_timeout = write_timeout
        self.opened = 0
        """Streams opened so far (pooled streams are reused: this grows slower than requests)."""

    async def _take(self, peer_id: str, *, fresh: bool = False) -> tuple[_Pooled, bool]:
        idle = [] if fresh else self._idle.get(peer_id, [])
        now = trio.current_time()
        while idle:
            pooled = idle.pop()
            if now - pooled.since < CLIENT_IDLE_SECONDS and not _dead(pooled.stream):
                return pooled, True
            await close_quietly(pooled.stream)
        stream = await self._open(peer_id)
        self.opened += 1
        return _Pooled(stream, h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES), now), False

    @contextlib.asynccontextmanager
    async def request(self, peer_id: str, method: str, target: str, headers: Headers, body: bytes, *,
                      on_stream: Callable[[Stream], None] = lambda stream: None,
                      abandoned: Callable[[], bool] = lambda: False) -> AsyncIterator[Response]:
        """Send the request; yield the response once its head arrived.

        A kept stream that fails is replaced by a fresh one once: before the request went out in
        full, or after it for an ``IDEMPOTENT`` method. A POST whose kept stream fails after it was
        sent raises PeerError (the peer may have run it; running it twice is worse than an error).

        ``on_stream`` is told which stream carries the request: closing it abandons the request, which
        the peer takes as its client's disconnect (then ``abandoned()`` is true, and
        the request is not sent again on a fresh stream). Leaving the block before the
        body ended resets it too; a stream whose exchange ended cleanly goes back to the pool."""
        head = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        head.append((b"content-length", str(len(body)).encode()))
        drops = self._drops.get(peer_id, 0)
        for attempt in (1, 2):
            pooled, reused = await self._take(peer_id, fresh=attempt == 2)
            conn, stream = pooled.conn, pooled.stream
            on_stream(stream)
            sent = False
            try:
                data = conn.send(h11.Request(method=method, target=target, headers=head)) or b""
                data += (conn.send(h11.Data(data=body)) or b"") if body else b""
                data += conn.send(h11.EndOfMessage()) or b""
                await write_all(stream, data, self.write_timeout)
                sent = True
                event = await _next_event(conn, stream)
            except Exception as exc:
                await reset(stream)
                if reused and attempt == 1 and not abandoned() and (not sent or method in IDEMPOTENT):
                    continue  # the kept stream had ended: once more, on a fresh one
                await self._failed(peer_id, abandoned())
                raise PeerError(f"HTTP over libp2p to {peer_id}: {exc}{_MAY_HAVE_RUN if sent else ''}") from None
            except BaseException:
                await reset(stream)
                raise
            if not isinstance(event, h11.Response):
                await reset(stream)
                if reused and attempt == 1 and not abandoned() and method in IDEMPOTENT:
                    continue
                await self._failed(peer_id, abandoned())
                raise PeerError(f"HTTP over libp2p to {peer_id}: the stream ended before a response{_MAY_HAVE_RUN}")
            break
        response = Response(event.status_code, [(bytes(k), bytes(v)) for k, v in event.headers], conn, stream)
        try:
            yield response
        finally:
            with trio.CancelScope(shield=True):
                # Not dropped meanwhile (revoked, say), and not abandoned: a request abandoned just as
                # its answer ended has its stream closed by whoever abandoned it, and a stream pooled
                # while that close is under way carried the next request into a closing stream.
                kept = self._drops.get(peer_id, 0) == drops and not abandoned()
                if kept and response._finished and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    pool = self._idle.setdefault(peer_id, [])
                    if len(pool) < IDLE_STREAMS_PER_PEER:
                        pool.append(_Pooled(stream, conn, trio.current_time()))
                    else:
                        await close_quietly(stream)
                else:  # abandoned: the peer reads the end (a reset can break the connection's teardown)
                    await close_quietly(stream)

    def idle(self, peer_id: str) -> int:
        """Streams kept for ``peer_id``, waiting for a request."""
        return len(self._idle.get(peer_id, ()))

    async def _failed(self, peer_id: str, abandoned: bool) -> None:
        """A request failed on a fresh stream (or after a retry): the peer is gone or refuses this
        node (it revoked it, say), so the streams kept for it are of no use either."""
        if not abandoned:
            await self.drop(peer_id)

    async def drop(self, peer_id: str) -> None:
        """Close the idle streams kept for ``peer_id``; those carrying a request are closed once it ends."""
        self._drops[peer_id] = self._drops.get(peer_id, 0) + 1
        for pooled in self._idle.pop(peer_id, []):
            await close_quietly(pooled.stream)

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for pooled in pool:
                await close_quietly(pooled.stream)
        self._idle.clear()
