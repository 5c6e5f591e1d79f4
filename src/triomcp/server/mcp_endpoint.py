"""The Streamable HTTP transport: moves bytes between ASGI and the sans-I/O engine.

All protocol decisions are the engine's. This module only reads the body
(with a size limit), writes JSON or Server-Sent Events, watches for client
disconnects and runs handlers in a cancel scope:

- a modern-era disconnect cancels the handler (spec: closing the stream cancels);
- a legacy-era disconnect does not: events go on being numbered and buffered
  in the session so a ``GET`` with ``Last-Event-ID`` can resume the stream;
- a legacy ``notifications/cancelled`` cancels the handler and no response is sent.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.types import Receive, Scope, Send

from triomcp.errors import HttpError, ToolError
from triomcp.mcp import jsonrpc
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.session import ReplayStream, SseEvent
from triomcp.mcp.versions import Era

__all__ = ["LateWatchers", "McpEndpoint", "read_body"]

log = logging.getLogger("triomcp.http")

KEEPALIVE_SECONDS = 15.0
ERROR_STATUS = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400, -32022: 400, -32601: 404}
"""HTTP status for a modern-era JSON-RPC error answer (others: 200)."""

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or HttpError(413) as soon as it grows past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"Payload Too Large: the body limit is {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


RETRY_MS = 1000
"""The ``retry:`` a legacy priming event carries: how long a client waits before it resumes a stream
the server closed (SSE polling, 2025-11-25) or that broke."""


def _sse(event: SseEvent | None, data: dict[str, Any] | None = None) -> bytes:
    if event is None:
        return b"event: message\ndata: " + jsonrpc.dumps(data) + b"\n\n"
    if event.data is None:  # a priming event: an id to resume from, and when to come back
        return f"id: {event.id}\nretry: {RETRY_MS}\ndata: \n\n".encode()
    return f"id: {event.id}\nevent: message\ndata: ".encode() + jsonrpc.dumps(event.data) + b"\n\n"


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    body = b""
    if reply.body is not None:
        body = jsonrpc.dumps(reply.body)
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _CallWriter:
    """One call's response, written from the handler's own task (no channel, no extra task).

    It answers JSON unless the handler sends something first; then it switches to SSE. Legacy
    SSE events are numbered on the session's replay stream and keep being numbered (and
    buffered) after the client leaves, so a ``GET`` with ``Last-Event-ID`` can resume them.
    """

    def __init__(self, call: Call, send: Send) -> None:
        self.call = call
        self._send = send
        self._lock = trio.Lock()
        self.disconnected = False
        self.closed = False
        """The server ended the HTTP response early (``close_stream``); the call goes on."""
        self.sse = False
        self.stream: ReplayStream | None = None
        self.last_write = 0.0
        self._owner: Callable[[SseEvent | None], None] = lambda event: None
        """Listener marker (one object, compared by identity): this connection delivers the stream."""

    async def _write(self, chunk: bytes) -> None:
        if self.disconnected:
            return
        self.last_write = trio.current_time()
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _start_sse(self) -> None:
        self.sse = True
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        if self.call.era is Era.LEGACY:
            self.stream = self.call.open_stream()
            self.stream.listener = self._owner
            if self.call.version >= "2025-11-25":
                await self._write(_sse(self.stream.push(None)))

    async def emit(self, message: dict[str, Any]) -> None:
        """A related message (or, last, the response) on this call's SSE stream."""
        async with self._lock:
            if not self.sse:
                await self._start_sse()
            if self.stream is None:
                await self._write(_sse(None, message))
                return
            event = self.stream.push(message)
            if self.disconnected:
                self.release()  # the client left before the call turned to SSE (_start_sse took the stream)
            if self.stream.listener is self._owner:
                await self._write(_sse(event))

    def left(self) -> None:
        """The client's connection closed. Legacy: its stream is free at once for a resuming ``GET``
        (one with ``Last-Event-ID``), not only at the handler's next event: a quiet tool may send none
        for minutes, and clients give up resuming after a few seconds of 409s."""
        self.disconnected = True
        self.release()

    def release(self) -> None:
        if self.stream is not None and self.stream.listener is self._owner:
            self.stream.listener = None

    async def close_stream(self) -> None:
        """Legacy 2025-11-25 SSE polling: end this HTTP response now, while the call goes on; its
        events (the response included) wait on the session's stream for a ``GET`` with
        ``Last-Event-ID``, after the priming event's ``retry``. Elsewhere (older versions, a
        JSON-only client, the modern era, where closing means cancelling) it does nothing."""
        if self.call.era is not Era.LEGACY or not self.call.accepts_sse or self.call.version < "2025-11-25":
            return
        async with self._lock:
            if self.disconnected:
                return
            if not self.sse:
                await self._start_sse()  # the priming event: the id to resume from
            self.disconnected = self.closed = True
            self.release()
            with trio.CancelScope(shield=True):
                await self._send({"type": "http.response.body", "body": b""})

    async def keepalive(self) -> None:
        async with self._lock:
            if self.sse:
                await self._write(b": keep-alive\n\n")

    # -- Outbound (what the engine's ToolContext talks to) ---------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        if self.call.accepts_sse:
            await self.emit(message)
        # A client that takes JSON only gets no related notifications: there is nowhere to put them.

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self.call.session
        if session is None or not self.call.accepts_sse:
            raise ToolError(
                f"cannot send {method}: this request has no back channel (the client must accept SSE)",
                code="no_back_channel",
            )
        request_id = session.next_request_id()
        answered = trio.Event()
        box: dict[str, Any] = {}

        def resolve(message: dict[str, Any]) -> None:
            box["message"] = message
            answered.set()

        session.pending[request_id] = resolve
        try:
            await self.emit(jsonrpc.request(request_id, method, params))
            await answered.wait()
        finally:
            session.pending.pop(request_id, None)
        message = box["message"]
        if "error" in message:
            error = message["error"]
            raise ToolError(f"client answered {method} with an error: {error.get('message')}", code="client_error")
        result: dict[str, Any] = message.get("result", {})
        return result

    async def finish(self, response: dict[str, Any] | None, *, cancelled: bool) -> None:
        """Send the response (JSON, or the last SSE event) and end the HTTP response."""
        if not self.sse:
            if response is not None:
                era_status = self.call.era is Era.MODERN
                code = response.get("error", {}).get("code")
                await send_reply(self._send, Reply(ERROR_STATUS.get(code, 200) if era_status else 200, response))
                return
            if self.disconnected:
                return
            # Cancelled by notifications/cancelled (legacy): no JSON-RPC response, an empty stream.
            await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await self._send({"type": "http.response.body", "body": b""})
            return
        if response is not None and not cancelled:
            await self.emit(response)
        if self.stream is not None:
            self.stream.finished = True
            if self.stream.listener is self._owner:
                self.stream.listener = None
            elif self.stream.listener is not None:
                self.stream.listener(None)  # end the resumed GET that delivered this stream
        if self.closed:
            return
        with trio.CancelScope(shield=True):
            await self._send({"type": "http.response.body", "body": b""})


@dataclass(slots=True)
class _Pending:
    since: float
    nursery: trio.Nursery
    watch: Callable[[], Awaitable[None]]
    watching: bool = False


class LateWatchers:
    """Gives a call its disconnect watcher only once it has run ``after`` seconds.

    A watcher is a Trio task; spawning it and cancelling it when the call ends cost about
    150 µs per call on the benchmark machine, more than the MCP engine itself, and most calls
    end long before a client could leave or a keep-alive is due. One sweeper task (run by the
    app's lifespan) starts a watcher for each call still running after ``after`` seconds.
    Without the sweeper running, every call gets its watcher at once, as before."""

    def __init__(self, after: float = 0.05) -> None:
        self.after = after
        self._calls: dict[int, _Pending] = {}
        self._ids = itertools.count()
        self._wake = trio.Event()
        self._running = False

    def add(self, nursery: trio.Nursery, watch: Callable[[], Awaitable[None]]) -> int:
        key = next(self._ids)
        pending = self._calls[key] = _Pending(trio.current_time(), nursery, watch)
        if not self._running:
            pending.watching = True
            nursery.start_soon(watch)
        self._wake.set()
        return key

    def remove(self, key: int) -> bool:
        """Forget the call; True when its watcher was started (the caller cancels it)."""
        pending = self._calls.pop(key, None)
        return pending is not None and pending.watching

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._calls:
                    self._wake = trio.Event()
                    await self._wake.wait()
                await trio.sleep(self.after)
                now = trio.current_time()
                for pending in list(self._calls.values()):
                    if not pending.watching and now - pending.since >= self.after:
                        pending.watching = True
                        pending.nursery.start_soon(pending.watch)
        finally:
            self._running = False
            for pending in self._calls.values():  # calls still running keep their watchers
                if not pending.watching:
                    pending.watching = True
                    pending.nursery.start_soon(pending.watch)


class McpEndpoint:
    """ASGI app for ``/mcp``."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int,
        stopping: trio.Event,
    ) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.stopping = stopping
        self.watchers = LateWatchers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body = await read_body(receive, self.max_body_bytes) if scope["method"] == "POST" else b""
        except HttpError as err:
            await send_reply(send, self.engine.error_reply(err))
            return
        outcome = self.engine.handle(
            HttpRequest(scope["method"], headers, body, scope.get("triomcp.principal"), scope.get("triomcp.auth"))
        )
        if isinstance(outcome, Reply):
            await send_reply(send, outcome)
        elif isinstance(outcome, Call):
            await self._call(outcome, receive, send)
        elif isinstance(outcome, StreamGrant):
            await self._stream(outcome, receive, send)
        else:
            await self._listen(outcome, receive, send)

    # -- one request/response call --------------------------------------------------------
    async def _call(self, call: Call, receive: Receive, send: Send) -> None:
        writer = _CallWriter(call, send)
        handler_scope = trio.CancelScope()
        call.bind_cancel(handler_scope.cancel)

        async def watch() -> None:
            """Client disconnects (modern: cancel the handler) and SSE keep-alives."""
            while True:
                with trio.move_on_after(KEEPALIVE_SECONDS):
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        writer.left()
                        if call.era is Era.MODERN:
                            handler_scope.cancel()
                        return
                    continue
                if trio.current_time() - writer.last_write >= KEEPALIVE_SECONDS:
                    await writer.keepalive()

        response: dict[str, Any] | None = None
        async with trio.open_nursery() as nursery:
            key = self.watchers.add(nursery, watch)
            try:
                with handler_scope:
                    response = await call.run(writer)
            finally:
                if self.watchers.remove(key):
                    nursery.cancel_scope.cancel()
        await writer.finish(response, cancelled=handler_scope.cancelled_caught)

    # -- long-lived streams --------------------------------------------------------------------
    async def _pump(
        self,
        first: list[bytes],
        inbox: trio.MemoryReceiveChannel[bytes | None],
        receive: Receive,
        send: Send,
    ) -> None:
        """Write SSE chunks until the stream ends, the client leaves or the server stops.

        When the server stops, what was queued before it did still goes out before the stream
        ends: the shutdown queues a listen stream's completion result and its end in the same
        step in which it sets ``stopping``, so a graceful close is never raced by the stop."""
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for chunk in first:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        left = ended = False

        async def until_disconnect() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True

        async with trio.open_nursery() as nursery:

            async def stop_on(event_wait: Callable[[], Any]) -> None:
                await event_wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on, until_disconnect)
            nursery.start_soon(stop_on, self.stopping.wait)
            while True:
                with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                    item = await inbox.receive()
                if idle.cancelled_caught:
                    item = b": keep-alive\n\n"
                elif item is None:
                    ended = True
                    break
                with trio.CancelScope(shield=True):  # a chunk taken from the inbox is written, not dropped
                    await send({"type": "http.response.body", "body": item, "more_body": True})
            nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            while not (left or ended):
                try:
                    item = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if item is None:
                    break
                await send({"type": "http.response.body", "body": item, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def _stream(self, grant: StreamGrant, receive: Receive, send: Send) -> None:
        """Legacy GET: the session's server-initiated stream, or the resumption of a cut stream."""
        channel, inbox = trio.open_memory_channel[bytes | None](math.inf)
        stream = grant.stream

        def deliver(event: SseEvent | None) -> None:
            channel.send_nowait(None if event is None else _sse(event))

        first = [_sse(event) for event in grant.replay]
        if stream.finished and stream.stream_id != "get":
            first_done = True
        else:
            first_done = False
            stream.listener = deliver
        if first_done:
            channel.send_nowait(None)
        try:
            await self._pump(first, inbox, receive, send)
        finally:
            if stream.listener is deliver:
                stream.listener = None

    async def _listen(self, listen: Listen, receive: Receive, send: Send) -> None:
        """Modern ``subscriptions/listen``: the acknowledgement, then matching notifications."""
        channel, inbox = trio.open_memory_channel[bytes | None](math.inf)

        def deliver(message: dict[str, Any] | None) -> None:
            channel.send_nowait(None if message is None else _sse(None, message))

        detach = self.engine.methods.attach_listener(listen, deliver)
        try:
            await self._pump([_sse(None, listen.acknowledgement)], inbox, receive, send)
        finally:
            detach()
