"""MCP over libp2p (``/triomcp/mcp/1.0.0``): JSON-RPC frames on one long-lived stream per peer.

Server side, :func:`serve_stream` reads frames and asks :func:`~triomcp.p2p.admit.admit` (sans-I/O)
what to do with each: run a request in its own task (bounded per peer), hand a notification to
the handler, route ``notifications/cancelled`` to the request's cancel scope (nothing more is sent
for it), or answer with a JSON-RPC error while the stream stays usable. A peer that leaves cancels
its requests. A ``notifications/cancelled`` with an ``id`` is a request (admit.py): answered as
over HTTP, it cancels nothing.

Client side, :class:`PeerChannel` multiplexes calls by id on one stream, routes progress
notifications to the caller whose ``progressToken`` they carry, sends ``notifications/cancelled``
when a caller is cancelled, and reopens the stream on the next call after it died. A call in
flight when the stream dies fails with a :class:`~triomcp.errors.PeerError`: a truncated stream
is never a result. :meth:`PeerChannel.retire` moves the next calls to a new stream (a direct
connection to the peer appeared, ``direct.py``); the old one ends once its calls are answered.

Both ends take a :class:`Stream` (the part of a libp2p stream they use): tests use memory streams.

Size: a little over 300 lines: the two ends of one protocol, each a short loop over the sans-I/O
``admit`` and ``framing``; splitting the client end off would part two halves tested together.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from triomcp import errors
from triomcp.errors import FrameError, InternalError, InvalidRequest, PeerError, RemoteError
from triomcp.p2p._errors import close_quietly
from triomcp.p2p.admit import CANCELLED, Answer, Budget, Cancel, Decision, Deliver, Run, admit, error_message
from triomcp.p2p.framing import FatalFrameError, FrameDecoder, FrameIssue, encode_frame

__all__ = ["MCP_PROTOCOL", "FrameHandler", "PeerChannel", "Stream", "serve_stream"]

log = logging.getLogger("triomcp.p2p")

MCP_PROTOCOL = "/triomcp/mcp/1.0.0"
READ_SIZE = 65536
ERROR_NAMES = {error.jsonrpc_code: error.code for error in (
    errors.NotAuthorized, errors.TooManyRequests, errors.MethodNotFound, errors.InvalidParams, InvalidRequest,
    errors.ParseError)}
"""A peer's JSON-RPC error code -> the ``code`` of the :class:`~triomcp.errors.RemoteError` raised."""

Notify = Callable[[dict[str, Any]], Awaitable[None]]


class FrameHandler(Protocol):
    async def __call__(self, message: dict[str, Any], *, peer_id: str, notify: Notify) -> dict[str, Any] | None: ...


class Stream(Protocol):
    """The part of a libp2p stream this module uses."""

    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    async def reset(self) -> None: ...


async def _read(stream: Stream) -> bytes:
    """Bytes from the stream; b"" at the end (libp2p signals the end with exceptions)."""
    try:
        return await stream.read(READ_SIZE)
    except Exception as exc:  # StreamEOF, StreamReset, closed connection
        log.debug("stream read ended: %s", exc)
        return b""


async def serve_stream(
    stream: Stream,
    peer_id: str,
    handler: FrameHandler,
    *,
    authorized: Callable[[str], bool],
    max_frame_bytes: int,
    max_inflight: int = 64,
    budget: Budget | None = None,
    on_frame_error: Callable[[], None] | None = None,
) -> None:
    """Serve one peer's MCP stream until it ends. Never raises (except Cancelled).

    ``budget``: the peer's request rate limit (shared by all its streams); a request over it is
    answered ``-32010`` at once. ``on_frame_error``: counts malformed and oversized frames."""
    decoder = FrameDecoder(max_frame_bytes)
    served = _Served(stream, peer_id, handler, on_frame_error)
    async with trio.open_nursery() as nursery:
        while not served.broken:
            data = await _read(stream)
            if not data:
                break
            try:
                items = decoder.feed(data)
            except FatalFrameError as exc:
                fatal = error_message(None, InvalidRequest.jsonrpc_code, str(exc))
                await served.act(Answer(fatal, frame_error=True), nursery)
                break
            for item in items:
                decision = admit(item, peer_id=peer_id, authorized=authorized(peer_id), inflight=served.inflight,
                                 max_inflight=max_inflight, budget=budget)
                await served.act(decision, nursery)
        # The peer left (or the stream broke): its requests are cancelled.
        nursery.cancel_scope.cancel()


class _Served:
    """The server side of one stream: its writes, and the requests in flight on it."""

    def __init__(self, stream: Stream, peer_id: str, handler: FrameHandler,
                 on_frame_error: Callable[[], None] | None) -> None:
        self.stream = stream
        self.peer_id = peer_id
        self.handler = handler
        self.on_frame_error = on_frame_error
        self.inflight: dict[str | int, trio.CancelScope] = {}
        self.broken = False
        self._write_lock = trio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        if self.broken:
            return
        async with self._write_lock:
            try:
                await self.stream.write(encode_frame(message))
            except Exception as exc:
                self.broken = True
                log.debug("peer %s: write failed: %s", self.peer_id[:16], exc)

    async def act(self, decision: Decision, nursery: trio.Nursery) -> None:
        """Carry out what :func:`admit` decided (a ``Drop`` needs nothing)."""
        match decision:
            case Run(ident, message):
                scope = self.inflight[ident] = trio.CancelScope()
                nursery.start_soon(self._run, ident, message, scope)
            case Answer(message, frame_error):
                if frame_error and self.on_frame_error is not None:
                    self.on_frame_error()
                await self.send(message)
            case Cancel(ident):
                self.inflight[ident].cancel()
            case Deliver(message):
                try:
                    await self.handler(message, peer_id=self.peer_id, notify=self.send)
                except Exception:
                    log.exception("peer %s: notification handler failed on %s", self.peer_id[:16],
                                  message.get("method"))

    async def _run(self, ident: str | int, message: dict[str, Any], scope: trio.CancelScope) -> None:
        response: dict[str, Any] | None
        try:
            with scope:
                try:
                    response = await self.handler(message, peer_id=self.peer_id, notify=self.send)
                except Exception:
                    log.exception("peer %s: handler failed on %s", self.peer_id[:16], message.get("method"))
                    response = error_message(ident, InternalError.jsonrpc_code, "internal error")
                if response is not None:
                    await self.send(response)
        finally:
            self.inflight.pop(ident, None)


@dataclass(eq=False)
class _Pending:
    """One call waiting on the channel: its answer, or why the stream ended before one came."""

    on_notification: Notify | None
    stream: Stream | None = None
    """The stream it was sent on: only that stream's end loses it."""
    done: trio.Event = field(default_factory=trio.Event)
    reply: dict[str, Any] | None = None
    lost: str | None = None

    def resolve(self, reply: dict[str, Any]) -> None:  # the first answer counts
        if not self.done.is_set():
            self.reply = reply
            self.done.set()

    def lose(self, reason: str) -> None:
        if not self.done.is_set():
            self.lost = reason
            self.done.set()


class PeerChannel:
    """Calls to one peer over one long-lived stream."""

    def __init__(self, peer_id: str, open_stream: Callable[[], Awaitable[Stream]], nursery: trio.Nursery, *,
                 max_frame_bytes: int) -> None:
        self.peer_id = peer_id
        self._open_stream = open_stream
        self._nursery = nursery
        self._max_frame_bytes = max_frame_bytes
        self._stream: Stream | None = None
        self._open_lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._retired: list[Stream] = []
        """Streams new calls no longer take (:meth:`retire`), closed once their calls are answered."""

    async def _ensure(self) -> Stream:
        async with self._open_lock:
            if self._stream is None:
                stream = await self._open_stream()
                self._stream = stream
                self._nursery.start_soon(self._reader, stream)
            return self._stream

    async def _reader(self, stream: Stream) -> None:
        decoder = FrameDecoder(self._max_frame_bytes)
        reason = "the peer closed the stream"
        try:
            while True:
                data = await _read(stream)
                if not data:
                    if decoder.mid_frame:
                        reason = "the stream ended in the middle of a frame"
                    break
                try:
                    items = decoder.feed(data)
                except FatalFrameError as exc:
                    reason = str(exc)
                    break
                for item in items:
                    if isinstance(item, FrameIssue):
                        log.warning("peer %s sent a bad frame: %s", self.peer_id[:16], item.message)
                        continue
                    await self._dispatch(item)
        finally:
            if self._stream is stream:
                self._stream = None
            for pending in list(self._pending.values()):
                if pending.stream is stream:
                    pending.lose(reason)
            if stream in self._retired:
                self._retired.remove(stream)
            await close_quietly(stream, reset=True)

    async def _dispatch(self, item: dict[str, Any]) -> None:
        if "method" in item:
            params = item.get("params") if isinstance(item.get("params"), dict) else {}
            token = params.get("progressToken") if params else None
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is not None and pending.on_notification is not None:
                try:
                    await pending.on_notification(item)
                except Exception:
                    log.exception("progress callback failed")
            return
        ident = item.get("id")
        pending = self._pending.get(ident) if isinstance(ident, int) else None
        if pending is not None:
            pending.resolve(item)

    async def _write(self, stream: Stream, message: dict[str, Any]) -> None:
        async with self._write_lock:
            await stream.write(encode_frame(message))

    async def call(self, method: str, params: dict[str, Any], *, on_notification: Notify | None = None) -> dict[str, Any]:
        """Send one request and wait for its result (the caller owns the timeout)."""
        stream = await self._ensure()
        ident = next(self._ids)
        params = dict(params)
        meta = dict(params.get("_meta") or {})
        meta["progressToken"] = ident
        params["_meta"] = meta
        pending = self._pending[ident] = _Pending(on_notification, stream)
        try:
            try:
                await self._write(stream, {"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
            except Exception as exc:
                if self._stream is stream:
                    self._stream = None
                raise PeerError(f"peer {self.peer_id}: sending failed: {exc}") from exc
            try:
                await pending.done.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await self._write(stream, {"jsonrpc": "2.0", "method": CANCELLED,
                                               "params": {"requestId": ident, "reason": "caller cancelled"}})
                raise
        finally:
            self._pending.pop(ident, None)
            if stream in self._retired:
                await self._close_if_done(stream)
        return self._result(method, pending)

    def _result(self, method: str, pending: _Pending) -> dict[str, Any]:
        if pending.reply is None:
            raise PeerError(f"peer {self.peer_id}: connection lost during {method}: {pending.lost}")
        reply = pending.reply
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            code = error.get("code")
            raise RemoteError(f"peer {self.peer_id}: {error.get('message', 'error')}",
                              code=ERROR_NAMES.get(code, f"jsonrpc_{code}") if isinstance(code, int)
                              else f"jsonrpc_{code}", data=error.get("data"))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise FrameError(f"peer {self.peer_id}: the response to {method} carries no result object")
        return result

    async def retire(self) -> None:
        """New calls open a new stream (the caller's libp2p puts it on the peer's best connection):
        the current one is closed once the calls sent on it are answered (closed earlier, the peer
        would take its end as their callers leaving, and cancel them)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._retired.append(stream)
            await self._close_if_done(stream)

    async def _close_if_done(self, stream: Stream) -> None:
        if stream in self._retired and not any(p.stream is stream for p in self._pending.values()):
            self._retired.remove(stream)
            await close_quietly(stream)  # the peer reads the end and closes its side; our reader ends

    async def aclose(self) -> None:
        for retired in list(self._retired):
            self._retired.remove(retired)
            await close_quietly(retired)
        stream, self._stream = self._stream, None
        if stream is not None:
            await close_quietly(stream)
