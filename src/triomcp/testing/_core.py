"""The JSON-RPC side of :class:`~triomcp.testing.McpTestClient`: each era's envelope (headers,
``_meta``, the session), request ids, the answers to what handlers ask, input-required rounds, and
the notifications kept. The MCP surface (tools, resources, prompts, tasks) is in ``client``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)

from triomcp.errors import McpError
from triomcp.mcp.headers import encode_header_value, render_scalar
from triomcp.mcp.tasks import TASKS_EXTENSION
from triomcp.testing._answers import Answers
from triomcp.testing._transports import Message, OnMessage, Transport

__all__ = ["ACCEPT", "ClientCore", "NotificationHandler"]

MAX_INPUT_ROUNDS = 20
"""Input-required rounds one call may take (a handler that never stops asking is a bug)."""
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
               "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}
"""Modern era: the param each method's ``Mcp-Name`` header mirrors."""
INPUT_METHODS = ("tools/call", "resources/read", "prompts/get")
ACCEPT = "application/json, text/event-stream"

NotificationHandler = Callable[[Message], Awaitable[None] | None]


class ClientCore:
    """State and requests of one test client (see :class:`~triomcp.testing.McpTestClient`)."""

    def __init__(self, *, era: Literal["modern", "legacy"], version: str, headers: Mapping[str, str],
                 answers: Answers, capabilities: Mapping[str, Any], log_level: str | None,
                 client_info: Mapping[str, Any]) -> None:
        self.era = era
        self.version = version
        self.extra_headers = {k.lower(): v for k, v in headers.items()}
        self.answers = answers
        self.capabilities: dict[str, Any] = {**answers.capabilities(), **capabilities}
        """What the client declares (from the handlers it has, and ``capabilities``)."""
        self.log_level = log_level
        self.client_info = dict(client_info)
        self.notifications: list[Message] = []
        """Every notification the server sent on a call's stream, in order."""
        self.input_requests: list[tuple[str, dict[str, Any]]] = []
        """Every request the client answered (``elicitation/create``, ...), in either era."""
        self.session_id: str | None = None
        """Legacy: the session's ``Mcp-Session-Id``."""
        self._transport: Transport | None = None
        self._ids = 0
        self._tool_schemas: dict[str, dict[str, Any]] = {}

    def _transport_or_fail(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use the client inside `async with McpTestClient(...) as client:`")
        return self._transport

    # -- what the server sent -------------------------------------------------------------------------------
    def notifications_of(self, method: str) -> list[dict[str, Any]]:
        """The params of every notification of that method, in order."""
        return [dict(m.get("params") or {}) for m in self.notifications if m.get("method") == method]

    @property
    def progress(self) -> list[dict[str, Any]]:
        """Every ``notifications/progress``'s params (``progressToken``, ``progress``, ``total``, ``message``)."""
        return self.notifications_of("notifications/progress")

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every ``notifications/message``'s params (``level``, ``data``, ``logger``)."""
        return self.notifications_of("notifications/message")

    # -- requests -------------------------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _legacy_headers(self) -> dict[str, str]:
        assert self.session_id is not None
        return {"content-type": "application/json", "accept": ACCEPT, "mcp-session-id": self.session_id,
                "mcp-protocol-version": self.version, **self.extra_headers}

    def _headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        if self.era == "legacy":
            return self._legacy_headers()
        headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": self.version,
                   "mcp-method": method}
        param = NAME_PARAMS.get(method)
        if param is not None and isinstance(params.get(param), str):
            headers["mcp-name"] = encode_header_value(params[param])
        if method == "tools/call":
            headers.update(self._param_headers(str(params.get("name")), params.get("arguments") or {}))
        return {**headers, **self.extra_headers}

    def _param_headers(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, str]:
        """``Mcp-Param-*`` for the arguments the tool's schema mirrors in headers (``x-mcp-header``)."""
        out: dict[str, str] = {}
        properties = (self._tool_schemas.get(tool) or {}).get("properties") or {}
        for argument, schema in properties.items():
            name = schema.get("x-mcp-header") if isinstance(schema, dict) else None
            rendered = render_scalar(arguments.get(argument)) if arguments.get(argument) is not None else None
            if isinstance(name, str) and rendered is not None:
                out[f"mcp-param-{name.lower()}"] = encode_header_value(rendered)
        return out

    def _meta(self, *, tasks: bool, progress: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.era == "modern":
            caps = dict(self.capabilities)
            if tasks:
                caps["extensions"] = {**(caps.get("extensions") or {}), TASKS_EXTENSION: {}}
            meta.update({PROTOCOL_VERSION_META_KEY: self.version, CLIENT_CAPABILITIES_META_KEY: caps,
                         CLIENT_INFO_META_KEY: self.client_info})
            if self.log_level is not None:
                meta[LOG_LEVEL_META_KEY] = self.log_level
        if progress:
            meta["progressToken"] = f"progress-{self._ids}"
        return meta

    def _on_message(self, on_notification: NotificationHandler | None) -> OnMessage:
        async def on_message(message: Message) -> Message | None:
            if "method" not in message:
                return None  # a stray response: not ours to answer
            if "id" in message:  # a server-to-client request (legacy): answer it
                params = dict(message.get("params") or {})
                self.input_requests.append((str(message["method"]), params))
                try:
                    result = await self.answers.answer(str(message["method"]), params)
                except LookupError as exc:  # no handler: what a client without it answers
                    return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": str(exc)}}
                except McpError as err:  # the handler answers with an error
                    return {"jsonrpc": "2.0", "id": message["id"], "error": err.error}
                return {"jsonrpc": "2.0", "id": message["id"], "result": result}
            self.notifications.append(message)
            if on_notification is not None:
                maybe = on_notification(message)
                if maybe is not None:
                    await maybe
            return None

        return on_message

    @staticmethod
    def _result(status: int, answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise RuntimeError(f"HTTP {status} without a JSON-RPC answer: {answer!r}")
        if "error" in answer:
            raise McpError(answer["error"])
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def request(self, method: str, params: Mapping[str, Any] | None = None, *,
                      on_notification: NotificationHandler | None = None, tasks: bool = False) -> dict[str, Any]:
        """Send one request and return its result; :class:`McpError` for a JSON-RPC error answer.

        The era's envelope is added (headers; in the modern era ``_meta`` with the protocol version,
        the client's capabilities and log level); ``tasks=True`` declares the tasks extension."""
        transport = self._transport_or_fail()
        ident = self._next_id()
        body_params = dict(params or {})
        meta = {**self._meta(tasks=tasks, progress=method in INPUT_METHODS), **(body_params.get("_meta") or {})}
        if meta:
            body_params["_meta"] = meta
        body = {"jsonrpc": "2.0", "id": ident, "method": method, "params": body_params}
        cancel_notice = None
        if self.era == "legacy":
            cancel_notice = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": ident, "reason": "cancelled by the client"}}
        status, _headers, answer = await transport.rpc(body, self._headers(method, body_params),
                                                       self._on_message(on_notification), cancel_notice=cancel_notice)
        return self._result(status, answer)

    async def _with_input(self, method: str, params: dict[str, Any], *, on_notification: NotificationHandler | None,
                          tasks: bool = False) -> dict[str, Any]:
        """A request whose handler may ask for input: modern input-required results are answered and
        the request retried until its result is final."""
        for _ in range(MAX_INPUT_ROUNDS):
            result = await self.request(method, params, on_notification=on_notification, tasks=tasks)
            if result.get("resultType") != "input_required":
                return result
            answers = await self._answer_all(result.get("inputRequests") or {})
            params = {**params, "inputResponses": answers}
            params.pop("requestState", None)
            if "requestState" in result:
                params["requestState"] = result["requestState"]
        raise RuntimeError(f"{method} still asked for input after {MAX_INPUT_ROUNDS} rounds")

    async def _answer_all(self, requests: Mapping[str, Any]) -> dict[str, Any]:
        answers = {}
        for key, request in requests.items():
            params = dict(request.get("params") or {})
            self.input_requests.append((str(request.get("method")), params))
            answers[key] = await self.answers.answer(str(request.get("method")), params)
        return answers

    async def _list(self, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.request(method, {"cursor": cursor} if cursor else {})
            items += page.get(key) or []
            cursor = page.get("nextCursor")
            if not cursor:
                return items
