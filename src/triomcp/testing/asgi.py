"""Run an ASGI app in-process, on the caller's Trio loop: its lifespan, then requests, no sockets.

:class:`InProcessApp` is what Hypercorn would be, minus the network: entering it runs the app's
lifespan startup in a nursery of its own (so a whole node starts: its task queue, its workers and,
when enabled, its libp2p host); requests go to the ASGI callable directly; leaving it cancels the
requests still running (as a server does at the end of its graceful timeout) and runs the lifespan
shutdown. Streaming responses are read as the app writes them, so SSE events arrive one by one.

An exception the app raises while serving a request reaches the test that made the request, at
its next read (as with Starlette's ``TestClient``); one nobody read is raised when the block ends.
A failed startup (``lifespan.startup.failed``) raises the app's own exception from ``async with``; an
app that answers the lifespan scope with nothing at all has no lifespan and is served without one.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import trio
from starlette.types import ASGIApp, Message

from triomcp.testing._scopes import exit_stack
from triomcp.testing.exchange import Exchange, HttpResponse, StreamingResponse

__all__ = ["InProcessApp"]

DEFAULT_HOST = "localhost"
"""The ``Host`` every request carries unless the test sets one (on a node's default allow-list)."""
CLIENT_ADDRESS = ("127.0.0.1", 40000)


class InProcessApp:
    """An ASGI app served in-process for the length of an ``async with`` block."""

    def __init__(self, app: ASGIApp, *, host: str = DEFAULT_HOST) -> None:
        self.app = app
        self.host = host
        self._stack = contextlib.AsyncExitStack()
        self._requests: trio.Nursery | None = None
        self._state: dict[str, Any] = {}
        self._exchanges: list[Exchange] = []
        self._lifespan_inbox, self._lifespan_receive = trio.open_memory_channel[Message](math.inf)
        self._lifespan_answer: Message | None = None
        self._lifespan_answered = trio.Event()
        self._lifespan_ended = trio.Event()
        self._lifespan_error: Exception | None = None

    # -- lifespan ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        try:
            outer = await self._stack.enter_async_context(trio.open_nursery())
            outer.start_soon(self._lifespan)
            await self._lifespan_step({"type": "lifespan.startup"}, "lifespan.startup.complete")
            self._stack.push_async_callback(self._lifespan_step, {"type": "lifespan.shutdown"},
                                            "lifespan.shutdown.complete")
            self._requests = await self._stack.enter_async_context(trio.open_nursery())
            self._stack.callback(self._requests.cancel_scope.cancel)
        except BaseException as exc:
            await exit_stack(self._stack, type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, etype: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        suppressed = await exit_stack(self._stack, etype, exc, tb)
        if exc is None:
            for exchange in self._exchanges:
                exchange.raise_error()
        return bool(suppressed)

    async def _lifespan(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self._state}

        async def send(message: Message) -> None:
            self._lifespan_answer = message
            self._lifespan_answered.set()

        try:
            await self.app(scope, self._lifespan_receive.receive, send)
        except Exception as exc:  # raised by __aenter__/__aexit__ as the startup or shutdown failure
            self._lifespan_error = exc
        finally:
            self._lifespan_ended.set()
            self._lifespan_answered.set()

    async def _lifespan_step(self, message: Message, success: str) -> None:
        if self._lifespan_ended.is_set():
            return
        self._lifespan_answered = trio.Event()
        self._lifespan_answer = None
        self._lifespan_inbox.send_nowait(message)
        await self._lifespan_answered.wait()
        answer = self._lifespan_answer
        if answer is not None and answer["type"] == success:
            if success == "lifespan.shutdown.complete":
                await self._lifespan_ended.wait()
            return
        if answer is None and message["type"] == "lifespan.startup":
            return  # returned or raised without a word: the app has no lifespan (ASGI spec), go on without
        await self._lifespan_ended.wait()
        if self._lifespan_error is not None:
            raise self._lifespan_error
        raise RuntimeError(f"{message['type']} failed: {answer.get('message', '') if answer else ''}")

    # -- requests ---------------------------------------------------------------------------------
    def _scope(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        target, _, query = path.partition("?")
        names = {name.lower() for name in headers}
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        if "host" not in names:
            raw.insert(0, (b"host", self.host.encode("latin-1")))
        if body and "content-length" not in names:
            raw.append((b"content-length", str(len(body)).encode()))
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": target, "raw_path": target.encode(),
            "query_string": query.encode(), "root_path": "", "headers": raw, "client": CLIENT_ADDRESS,
            "server": ("127.0.0.1", 80), "state": dict(self._state),
        }

    def begin(self, method: str, path: str = "/mcp", *, headers: Mapping[str, str] | None = None,
              body: bytes | Any = b"") -> Exchange:
        """Send one request and return at once; :meth:`Exchange.response` waits for the answer to start.
        The caller ends it with :meth:`Exchange.disconnect` (:meth:`stream` does both for a block)."""
        if self._requests is None:
            raise RuntimeError("the app is not running: use `async with InProcessApp(app) as node:`")
        all_headers = dict(headers or {})
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            if not any(name.lower() == "content-type" for name in all_headers):
                all_headers["content-type"] = "application/json"
        # Keep what may still fail (running) or failed unseen: __aexit__ raises such errors.
        self._exchanges = [e for e in self._exchanges
                           if not e.finished.is_set() or (e.error is not None and not e.error_seen)]
        exchange = Exchange(f"{method} {path}", body)
        self._exchanges.append(exchange)
        self._requests.start_soon(exchange.run, self.app, self._scope(method, path, all_headers, body))
        return exchange

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str = "/mcp", *, headers: Mapping[str, str] | None = None,
                     body: bytes | Any = b"") -> AsyncIterator[StreamingResponse]:
        """Send one request; the block gets the response once its status is known and reads the body
        as it comes. Leaving the block disconnects the client (the app may still be running).

        ``body``: bytes, or any other value to send as JSON (with ``content-type: application/json``
        unless ``headers`` name one)."""
        exchange = self.begin(method, path, headers=headers, body=body)
        try:
            yield await exchange.response()
        finally:
            exchange.disconnect()

    async def request(self, method: str, path: str = "/mcp", *, headers: Mapping[str, str] | None = None,
                      body: bytes | Any = b"") -> HttpResponse:
        """Send one request and read the whole response."""
        async with self.stream(method, path, headers=headers, body=body) as response:
            content = await response.read()
        return HttpResponse(response.status, response.headers, content)

