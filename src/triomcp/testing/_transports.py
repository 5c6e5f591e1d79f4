"""How :class:`~triomcp.testing.McpTestClient` reaches a server: an engine in-process, or an ASGI app
in-process. Both move JSON-RPC messages as the HTTP endpoint would, and handle a cancelled call the
way its era says (legacy: ``notifications/cancelled``; modern: the call is cut)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from triomcp.errors import ToolError
from triomcp.mcp import Call, Engine, HttpRequest, Reply
from triomcp.testing.asgi import InProcessApp
from triomcp.testing.exchange import StreamingResponse

__all__ = ["CANCEL_GRACE_SECONDS", "EngineTransport", "HttpTransport", "Message", "OnMessage", "Transport"]

CANCEL_GRACE_SECONDS = 10.0
"""How long a cancelled call waits (shielded) for the server side to stop before it gives up."""

Message = dict[str, Any]
OnMessage = Callable[[Message], Awaitable[Message | None]]
"""The client's side of one call: a notification (returns None) or a server request (returns the answer)."""


class Transport(Protocol):
    async def rpc(self, body: Message, headers: dict[str, str], on_message: OnMessage, *,
                  cancel_notice: Message | None) -> tuple[int, dict[str, str], Any]:
        """Send one request; its HTTP status, headers and JSON-RPC answer (None when there is none).

        Cancelled: ``cancel_notice`` (legacy ``notifications/cancelled``) is sent, or else the call
        is cut (modern); either way, returns once the server side has stopped (bounded)."""

    async def send(self, method: str, headers: dict[str, str], body: Message | None) -> tuple[int, Any]:
        """A request that is answered at once (notifications, responses, DELETE): status and body."""


# -- in-process engine ----------------------------------------------------------------------------------
class CallOutbound:
    """What the HTTP endpoint's writer is to a handler, minus HTTP: notifications go straight to the
    client, server-to-client requests (legacy) are answered by it."""

    def __init__(self, call: Call, on_message: OnMessage) -> None:
        self.call = call
        self.on_message = on_message
        self.asked = 0

    async def send(self, message: Message) -> None:
        await self.on_message(message)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.call.session is None:
            raise ToolError(f"cannot send {method}: this request has no back channel", code="no_back_channel")
        self.asked += 1
        answer = await self.on_message({"jsonrpc": "2.0", "id": f"s{self.asked}", "method": method, "params": params})
        if answer is None or "error" in answer:
            error = (answer or {}).get("error") or {}
            raise ToolError(f"client answered {method} with an error: {error.get('message')}", code="client_error")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def close_stream(self) -> None:
        """No HTTP response to end here: the call just goes on (as it does wherever a transport cannot)."""


class EngineTransport:
    def __init__(self, engine: Engine, principal: str | None, nursery: trio.Nursery) -> None:
        self.engine = engine
        self.principal = principal
        self.nursery = nursery

    def _handle(self, method: str, headers: dict[str, str], body: Message | None) -> Any:
        raw = b"" if body is None else json.dumps(body).encode()
        return self.engine.handle(HttpRequest(method, headers, raw, self.principal))

    async def send(self, method: str, headers: dict[str, str], body: Message | None) -> tuple[int, Any]:
        outcome = self._handle(method, headers, body)
        if not isinstance(outcome, Reply):
            raise RuntimeError(f"{method} opened a stream: drive an app (McpTestClient(create_app(...))) for that")
        return outcome.status, outcome.body

    async def rpc(self, body: Message, headers: dict[str, str], on_message: OnMessage, *,
                  cancel_notice: Message | None) -> tuple[int, dict[str, str], Any]:
        outcome = self._handle("POST", headers, body)
        if isinstance(outcome, Reply):
            return outcome.status, dict(outcome.headers), outcome.body
        if not isinstance(outcome, Call):
            raise RuntimeError(f"{body.get('method')} opens a stream: drive an app (McpTestClient(create_app(...))) "
                               "for subscriptions and session streams")
        return 200, {}, await self._run(outcome, on_message, cancel_notice, headers)

    async def _run(self, call: Call, on_message: OnMessage, cancel_notice: Message | None,
                   headers: dict[str, str]) -> Message | None:
        """Run the handler in a task of its own, as the endpoint does, so that the client's cancellation
        reaches it the way the era says (not simply as the caller's own cancellation)."""
        handler_scope = trio.CancelScope()
        call.bind_cancel(handler_scope.cancel)
        done = trio.Event()
        box: dict[str, Any] = {}

        async def run() -> None:
            try:
                with handler_scope:
                    box["response"] = await call.run(CallOutbound(call, on_message))
            except Exception as exc:  # re-raised in the caller's task
                box["error"] = exc
            finally:
                done.set()

        self.nursery.start_soon(run)
        try:
            await done.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                if cancel_notice is not None:
                    self._handle("POST", headers, cancel_notice)
                else:
                    handler_scope.cancel()
                with trio.move_on_after(CANCEL_GRACE_SECONDS):
                    await done.wait()
            raise
        if "error" in box:
            raise box["error"]
        response: Message | None = box.get("response")
        return response


# -- an ASGI app, in-process ---------------------------------------------------------------------------------
class Resume:
    def __init__(self, last_event_id: str) -> None:
        self.last_event_id = last_event_id


class HttpTransport:
    def __init__(self, node: InProcessApp) -> None:
        self.node = node

    async def send(self, method: str, headers: dict[str, str], body: Message | None) -> tuple[int, Any]:
        response = await self.node.request(method, "/mcp", headers=headers, body=b"" if body is None else body)
        return response.status, (response.json() if response.body else None)

    async def rpc(self, body: Message, headers: dict[str, str], on_message: OnMessage, *,
                  cancel_notice: Message | None) -> tuple[int, dict[str, str], Any]:
        resume: str | None = None
        while True:
            if resume is None:
                exchange = self.node.begin("POST", "/mcp", headers=headers, body=body)
            else:  # legacy: the server ended the stream early (SSE polling); take the rest with GET
                get_headers = {k: v for k, v in headers.items() if k != "content-type"}
                exchange = self.node.begin("GET", "/mcp", headers={
                    **get_headers, "accept": "text/event-stream", "last-event-id": resume})
            try:
                outcome = await self._read(await exchange.response(), body["id"], headers, on_message)
            except trio.Cancelled:
                with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE_SECONDS):
                    if cancel_notice is not None:
                        await self.send("POST", headers, cancel_notice)
                    exchange.disconnect()
                    await exchange.finished.wait()
                raise
            finally:
                exchange.disconnect()
            if isinstance(outcome, Resume):
                resume = outcome.last_event_id
                continue
            return outcome

    async def _read(self, response: StreamingResponse, ident: Any, headers: dict[str, str],
                    on_message: OnMessage) -> tuple[int, dict[str, str], Any] | Resume:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raw = await response.read()
            return response.status, response.headers, (json.loads(raw) if raw else None)
        last_event_id = None
        while (event := await response.next_event()) is not None:
            if event.id:
                last_event_id = event.id
            if not event.data:
                continue  # a priming event: only its id matters
            message = event.json()
            if "method" not in message and message.get("id") == ident:
                return response.status, response.headers, message
            answer = await on_message(message)
            if answer is not None:  # the client's answer to a server request, POSTed beside the stream
                status, _ = await self.send("POST", headers, answer)
                if status != 202:
                    raise RuntimeError(f"the server refused the answer to {message.get('method')}: HTTP {status}")
        if last_event_id is not None and "mcp-session-id" in headers:
            return Resume(last_event_id)
        raise RuntimeError(f"{response.status}: the response stream ended without an answer")
