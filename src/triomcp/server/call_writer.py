"""One call's HTTP response: JSON, or SSE once the handler sends something; the call's Outbound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from starlette.types import Send

from triomcp.errors import ToolError
from triomcp.mcp import jsonrpc
from triomcp.mcp.outcomes import Call, Reply
from triomcp.mcp.session import ReplayStream, SseEvent
from triomcp.mcp.versions import Era
from triomcp.server.http_io import ERROR_STATUS, SSE_HEADERS, send_reply, sse

__all__ = ["CallWriter"]


class CallWriter:
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

    async def _startsse(self) -> None:
        self.sse = True
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        if self.call.era is Era.LEGACY:
            self.stream = self.call.open_stream()
            self.stream.listener = self._owner
            if self.call.version >= "2025-11-25":
                await self._write(sse(self.stream.push(None)))

    async def emit(self, message: dict[str, Any]) -> None:
        """A related message (or, last, the response) on this call's SSE stream."""
        async with self._lock:
            if not self.sse:
                await self._startsse()
            if self.stream is None:
                await self._write(sse(None, message))
                return
            event = self.stream.push(message)
            if self.disconnected:
                self.release()  # the client left before the call turned to SSE (_start_sse took the stream)
            if self.stream.listener is self._owner:
                await self._write(sse(event))

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
                await self._startsse()  # the priming event: the id to resume from
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
