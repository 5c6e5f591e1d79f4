"""MCP over libp2p (``/triomcp/mcp/1.0.0``): JSON-RPC frames on one long-lived stream per peer.

Server side, :func:`serve_stream` reads frames and runs each request in its own
task (bounded per peer), routes ``notifications/cancelled`` to the request's
cancel scope (nothing more is sent for it) and answers bad frames with a
JSON-RPC error while the stream stays usable. A peer that leaves cancels its
requests.

Client side, :class:`PeerChannel` multiplexes calls by id on one stream, routes
progress notifications to the caller whose ``progressToken`` they carry, sends
``notifications/cancelled`` when a caller is cancelled, and reopens the stream on
the next call after it died. A call in flight when the stream dies fails with a
:class:`~triomcp.errors.PeerError`: a truncated stream is never a result.

Size: the two ends of one wire protocol, kept together so each side is read against the other.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from triomcp.errors import FrameError, PeerError, RemoteError
from triomcp.p2p._errors import close_quietly
from triomcp.p2p.framing import FatalFrameError, FrameDecoder, FrameIssue, encode_frame

__all__ = ["MCP_PROTOCOL", "FrameHandler", "PeerChannel", "TokenBucket", "serve_stream"]

log = logging.getLogger("triomcp.p2p")

MCP_PROTOCOL = "/triomcp/mcp/1.0.0"
NOT_AUTHORIZED = -32001
TOO_MANY = -32010
READ_SIZE = 65536
ERROR_NAMES = {NOT_AUTHORIZED: "not_authorized", TOO_MANY: "too_many_requests", -32601: "method_not_found",
               -32602: "invalid_params", -32600: "invalid_request", -32700: "parse_error"}

Notify = Callable[[dict[str, Any]], Awaitable[None]]


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst`` (a peer's request budget)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = trio.current_time()

    def _refill(self) -> None:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def full(self) -> bool:
        """Refilled to the brim: its owner has been idle long enough to be forgotten."""
        self._refill()
        return self.tokens >= self.burst

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FrameHandler(Protocol):
    async def __call__(self, message: dict[str, Any], *, peer_id: str, notify: Notify) -> dict[str, Any] | None: ...


class Stream(Protocol):
    """The part of a libp2p stream this module uses."""

    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    async def reset(self) -> None: ...


def _error(ident: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident if isinstance(ident, (str, int)) else None,
            "error": {"code": code, "message": message}}


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
    budget: TokenBucket | None = None,
    on_frame_error: Callable[[], None] | None = None,
) -> None:
    """Serve one peer's MCP stream until it ends. Never raises (except Cancelled).

    ``budget``: the peer's request rate limit (shared by all its streams); a request over it is
    answered ``-32010`` at once. ``on_frame_error``: counts malformed and oversized frames."""
    decoder = FrameDecoder(max_frame_bytes)
    write_lock = trio.Lock()
    inflight: dict[Any, trio.CancelScope] = {}
    broken = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal broken
        if broken:
            return
        async with write_lock:
            try:
                await stream.write(encode_frame(message))
            except Exception as exc:
                broken = True
                log.debug("peer %s: write failed: %s", peer_id[:16], exc)

    async def run_request(message: dict[str, Any], scope: trio.CancelScope) -> None:
        ident = message.get("id")
        response: dict[str, Any] | None
        try:
            with scope:
                try:
                    response = await handler(message, peer_id=peer_id, notify=send)
                except Exception:
                    log.exception("peer %s: handler failed on %s", peer_id[:16], message.get("method"))
                    response = _error(ident, -32603, "internal error")
                if response is not None:
                    await send(response)
        finally:
            inflight.pop(ident, None)

    async with trio.open_nursery() as nursery:
        while not broken:
            data = await _read(stream)
            if not data:
                break
            try:
                items = decoder.feed(data)
            except FatalFrameError as exc:
                if on_frame_error is not None:
                    on_frame_error()
                await send(_error(None, -32600, str(exc)))
                break
            for item in items:
                if isinstance(item, FrameIssue):
                    if on_frame_error is not None:
                        on_frame_error()
                    await send(_error(None, item.code, item.message))
                    continue
                ident = item.get("id")
                if "method" not in item:
                    await send(_error(ident, -32600, "peers may only send requests and notifications"))
                    continue
                if not authorized(peer_id):
                    if "id" in item:
                        await send(_error(ident, NOT_AUTHORIZED,
                                          f"not authorized: peer {peer_id} is not in authorized_peers"))
                    continue
                if item.get("method") == "notifications/cancelled":
                    params = item.get("params") if isinstance(item.get("params"), dict) else {}
                    target = params.get("requestId")  # type: ignore[union-attr]
                    scope = inflight.get(target) if isinstance(target, (str, int)) else None
                    if scope is not None:
                        scope.cancel()
                    continue
                if "id" not in item:
                    try:
                        await handler(item, peer_id=peer_id, notify=send)
                    except Exception:
                        log.exception("peer %s: notification handler failed on %s", peer_id[:16], item.get("method"))
                    continue
                if not isinstance(ident, (str, int)) or isinstance(ident, bool):
                    await send(_error(None, -32600, "id must be a string or an integer"))
                    continue
                if ident in inflight:
                    await send(_error(ident, -32600, f"request id {ident!r} is already in flight"))
                    continue
                if len(inflight) >= max_inflight:
                    await send(_error(ident, TOO_MANY, f"too many requests in flight (limit {max_inflight})"))
                    continue
                if budget is not None and not budget.take():
                    await send(_error(ident, TOO_MANY, f"too many requests (limit {budget.rate:g}/s per peer)"))
                    continue
                scope = trio.CancelScope()
                inflight[ident] = scope
                nursery.start_soon(run_request, item, scope)
        # The peer left (or the stream broke): its requests are cancelled.
        nursery.cancel_scope.cancel()


class PeerChannel:
    """Calls to one peer over one long-lived stream."""

    def __init__(
        self,
        peer_id: str,
        open_stream: Callable[[], Awaitable[Stream]],
        nursery: trio.Nursery,
        *,
        max_frame_bytes: int,
    ) -> None:
        self.peer_id = peer_id
        self._open_stream = open_stream
        self._nursery = nursery
        self._max_frame_bytes = max_frame_bytes
        self._stream: Stream | None = None
        self._open_lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[trio.Event, list[dict[str, Any]], Notify | None]] = {}

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
            for event, box, _ in list(self._pending.values()):
                if not box:
                    box.append({"__lost__": reason})
                    event.set()
            await close_quietly(stream, reset=True)

    async def _dispatch(self, item: dict[str, Any]) -> None:
        if "method" in item:
            params = item.get("params") if isinstance(item.get("params"), dict) else {}
            token = params.get("progressToken") if params else None
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is not None and pending[2] is not None:
                try:
                    await pending[2](item)
                except Exception:
                    log.exception("progress callback failed")
            return
        ident = item.get("id")
        pending = self._pending.get(ident) if isinstance(ident, int) else None
        if pending is not None:
            pending[1].append(item)
            pending[0].set()

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
        event = trio.Event()
        box: list[dict[str, Any]] = []
        self._pending[ident] = (event, box, on_notification)
        try:
            try:
                await self._write(stream, {"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
            except Exception as exc:
                if self._stream is stream:
                    self._stream = None
                raise PeerError(f"peer {self.peer_id}: sending failed: {exc}") from exc
            try:
                await event.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await self._write(stream, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                               "params": {"requestId": ident, "reason": "caller cancelled"}})
                raise
        finally:
            self._pending.pop(ident, None)
        reply = box[0]
        if "__lost__" in reply:
            raise PeerError(f"peer {self.peer_id}: connection lost during {method}: {reply['__lost__']}")
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

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await close_quietly(stream)

