"""The Streamable HTTP transport: moves bytes between ASGI and the sans-I/O engine.

All protocol decisions are the engine's. This module only reads the body
(with a size limit), writes JSON or Server-Sent Events, watches for client
disconnects and runs handlers in a cancel scope:

- a modern-era disconnect cancels the handler (spec: closing the stream cancels);
- a legacy-era disconnect does not: events go on being numbered and buffered
  in the session so a ``GET`` with ``Last-Event-ID`` can resume the stream;
- a legacy ``notifications/cancelled`` cancels the handler and no response is sent.

A request that names a session, task or ``requestState`` held by another node of the mesh is
served there (:class:`~triomcp.server.relay.Relay`). A call runs only once :class:`~triomcp.server.admission.Admission` gives it a slot (held until the
handler ends, however it ends); a refused call is answered 503 at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from starlette.types import Receive, Scope, Send

from triomcp.errors import HttpError
from triomcp.mcp import jsonrpc
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.session import SseEvent
from triomcp.mcp.versions import Era
from triomcp.server.admission import NEVER_REFUSED, RETRY_AFTER_SECONDS, Admission, Refusal, principal_key
from triomcp.server.call_writer import CallWriter
from triomcp.server.http_io import SSE_HEADERS, read_body, request_headers, send_reply, sse
from triomcp.server.late_watchers import LateWatchers
from triomcp.server.relay import Relay

__all__ = ["McpEndpoint"]

log = logging.getLogger("triomcp.http")

KEEPALIVE_SECONDS = 15.0
_RETRY_AFTER = {"retry-after": str(RETRY_AFTER_SECONDS)}


def refused_reply(call: Call, refusal: Refusal) -> Reply:
    """503, ``Retry-After`` and JSON-RPC error -32010 (with the request's id) for a refused call."""
    err = refusal.error()
    return Reply(err.http_status, jsonrpc.error_response(call.request_id, err), _RETRY_AFTER)


class McpEndpoint:
    """ASGI app for ``/mcp``."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int,
        stopping: trio.Event,
        admission: Admission | None = None,
        relay: Relay | None = None,
    ) -> None:
        self.engine = engine
        self.relay = relay
        self.max_body_bytes = max_body_bytes
        self.stopping = stopping
        self.admission = admission
        self.watchers = LateWatchers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, request_headers(scope))

    async def serve(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """One request, its headers already read (by lower-case name: :func:`request_headers`)."""
        try:
            body = await read_body(receive, self.max_body_bytes) if scope["method"] == "POST" else b""
        except HttpError as err:
            await send_reply(send, self.engine.error_reply(err))
            return
        request = HttpRequest(scope["method"], headers, body, scope.get("triomcp.principal"), scope.get("triomcp.auth"))
        if self.relay is not None and "triomcp.peer" not in scope:  # not relayed here already
            route, request = self.engine.route(request)
            if route is not None and await self.relay.serve(route, scope, body, receive, send):
                return
        outcome = self.engine.handle(request)
        if isinstance(outcome, Reply):
            await send_reply(send, outcome)
        elif isinstance(outcome, Call):
            admission = self.admission
            if admission is None or outcome.tool in NEVER_REFUSED:
                await self._call(outcome, receive, send)
                return
            principal = principal_key(scope)
            refusal = await admission.enter(principal)
            if refusal is not None:
                await send_reply(send, refused_reply(outcome, refusal))
                return
            try:
                await self._call(outcome, receive, send)
            finally:
                admission.leave(principal)
        elif isinstance(outcome, StreamGrant):
            await self._stream(outcome, receive, send)
        else:
            relayed = self.relay is not None and "triomcp.peer" not in scope
            await self._listen(outcome, receive, send, scope=scope if relayed else None, body=body)

    # -- one request/response call --------------------------------------------------------
    async def _call(self, call: Call, receive: Receive, send: Send) -> None:
        writer = CallWriter(call, send)
        handler_scope = trio.CancelScope()
        call.bind_cancel(handler_scope.cancel)
        failed: list[Exception] = []

        async def watch() -> None:
            """Client disconnects (modern: cancel the handler) and SSE keep-alives. It may run in
            the watchers' sweeper's nursery, not this call's: its error is kept for the call."""
            try:
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
            except Exception as exc:
                failed.append(exc)
                handler_scope.cancel()

        response: dict[str, Any] | None = None
        watchers = self.watchers
        if watchers.running:
            # The usual case: a watcher, if the call outlives LateWatchers.after, runs in the
            # sweeper's nursery, so the call opens none (a nursery per call cost about 12 µs and a
            # schedule point; docs/architecture.md, "The nursery tree").
            key = watchers.add(None, watch)
            try:
                with handler_scope:
                    response = await call.run(writer)
            finally:
                watchers.remove(key)
        else:
            async with trio.open_nursery() as nursery:
                key = watchers.add(nursery, watch)
                try:
                    with handler_scope:
                        response = await call.run(writer)
                finally:
                    if watchers.remove(key):
                        nursery.cancel_scope.cancel()
        if failed:
            raise failed[0]
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
            channel.send_nowait(None if event is None else sse(event))

        first = [sse(event) for event in grant.replay]
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

    async def _listen(self, listen: Listen, receive: Receive, send: Send, *, scope: Scope | None = None,
                      body: bytes = b"") -> None:
        """Modern ``subscriptions/listen``: the acknowledgement, then matching notifications. Tasks
        held by other nodes of the mesh are watched there (``scope``: the request, to relay)."""
        channel, inbox = trio.open_memory_channel[bytes | None](math.inf)

        def deliver(message: dict[str, Any] | None) -> None:
            channel.send_nowait(None if message is None else sse(None, message))

        detach = self.engine.attach_listener(listen, deliver)
        try:
            if scope is None or self.relay is None:
                await self._pump([sse(None, listen.acknowledgement)], inbox, receive, send)
                return
            async with self.relay.watching_tasks(listen, scope, body, deliver):
                await self._pump([sse(None, listen.acknowledgement)], inbox, receive, send)
        finally:
            detach()
