"""An MCP client for tests that talks to a registry, an engine or a whole app in-process.

:class:`McpTestClient` speaks either era (``era="modern"``, stateless, by default; ``"legacy"``
does the ``initialize`` handshake and keeps the session) on the caller's Trio loop, with no sockets:

- given a :class:`~triomcp.mcp.Registry` (or an :class:`~triomcp.mcp.Engine`), it builds the HTTP
  requests a client would send, hands them to ``Engine.handle`` and runs the resulting
  :class:`~triomcp.mcp.Call` with an outbound of its own, as the HTTP endpoint does;
- given an ASGI app (``create_app(...)``) or an :class:`~triomcp.testing.InProcessApp`, it sends
  the same requests to the app and reads JSON or SSE answers; the app's lifespan runs (a whole node:
  its queue and workers, and libp2p when enabled), and tasks and ``subscriptions/listen`` work.

What a handler says and asks is handled the way a client does:

- notifications (progress, log messages) are kept in :attr:`McpTestClient.notifications` (and
  :attr:`~McpTestClient.progress`, :attr:`~McpTestClient.logs`) and passed to ``on_notification``;
  every call carries a progress token, and the client asks for log messages from ``log_level`` up;
- elicitation, sampling and roots are answered by the ``elicitation=``/``sampling=`` handlers and the
  ``roots=`` list, which also decide the capabilities the client declares: in the legacy era as
  answers to the server's requests, in the modern era by retrying input-required results with
  ``inputResponses`` (and the ``requestState``) until the result is final;
- cancelling the task that awaits a call (``trio.CancelScope.cancel``, ``move_on_after``) cancels it on
  the server: ``notifications/cancelled`` in the legacy era, a disconnect (or, in-process, the call's
  cancel scope) in the modern era; the client returns once the handler has stopped.

JSON-RPC error answers raise :class:`~triomcp.errors.McpError`; tool failures are results
(``isError: true``), as on the wire.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import trio

from triomcp import __version__
from triomcp.errors import McpError
from triomcp.mcp import LEGACY_VERSIONS, MODERN_VERSIONS, Engine, Registry
from triomcp.testing._answers import Answers, InputHandler
from triomcp.testing._core import ACCEPT, ClientCore, NotificationHandler
from triomcp.testing._scopes import exit_stack
from triomcp.testing._transports import EngineTransport, HttpTransport, Message
from triomcp.testing.asgi import InProcessApp
from triomcp.testing.exchange import StreamingResponse

__all__ = ["McpTestClient", "Subscription"]

TERMINAL_TASK_STATUSES = frozenset({"completed", "failed", "cancelled"})


class Subscription:
    """An open modern ``subscriptions/listen`` stream (see :meth:`McpTestClient.listen`)."""

    def __init__(self, response: StreamingResponse, acknowledgement: Message) -> None:
        self._response = response
        self.acknowledgement = acknowledgement
        """The first message: ``notifications/subscriptions/acknowledged`` with what is honoured."""
        self.received: list[Message] = []

    async def next(self) -> Message | None:
        """The next notification (list changes, resource updates, task statuses); None when the
        stream ended (the server's completion result, at shutdown, ends it too)."""
        while (event := await self._response.next_event()) is not None:
            if event.data:
                message: Message = event.json()
                if "method" not in message:
                    return None  # the listen request's completion result: the server is stopping
                self.received.append(message)
                return message
        return None


# -- the client ------------------------------------------------------------------------------------------------
class McpTestClient(ClientCore):
    """A client for tests: ``async with McpTestClient(target) as client:``.

    ``target``: a :class:`Registry` (served by a new :class:`Engine`), an :class:`Engine`, an ASGI
    app (run in-process for the block, lifespan included) or a running :class:`InProcessApp`.
    ``principal``: who is asking (registry and engine targets only; an app authenticates its requests
    from ``headers``, e.g. ``{"authorization": "Bearer ..."}``)."""

    def __init__(
        self,
        target: Registry | Engine | InProcessApp | Callable[..., Awaitable[None]],
        *,
        era: Literal["modern", "legacy"] = "modern",
        version: str | None = None,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        elicitation: InputHandler | None = None,
        sampling: InputHandler | None = None,
        roots: Sequence[dict[str, Any]] | None = None,
        capabilities: Mapping[str, Any] | None = None,
        log_level: str | None = "debug",
        client_info: Mapping[str, Any] | None = None,
    ) -> None:
        if era not in ("modern", "legacy"):
            raise ValueError(f"era must be 'modern' or 'legacy', not {era!r}")
        versions = MODERN_VERSIONS if era == "modern" else LEGACY_VERSIONS
        if version is not None and version not in versions:
            raise ValueError(f"{version!r} is not a {era}-era version ({', '.join(versions)})")
        if principal is not None and not isinstance(target, (Registry, Engine)):
            raise ValueError("principal= works with a registry or an engine; an app takes it from its auth headers")
        super().__init__(era=era, version=version or versions[-1], headers=headers or {},
                         answers=Answers(elicitation=elicitation, sampling=sampling, roots=roots),
                         capabilities=capabilities or {}, log_level=log_level,
                         client_info=client_info or {"name": "triomcp.testing", "version": __version__})
        self.target = target
        self.principal = principal
        self.server_info: dict[str, Any] = {}
        self.server_capabilities: dict[str, Any] = {}
        self.node: InProcessApp | None = None
        """The running app, for an app target."""
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        try:
            nursery = await self._stack.enter_async_context(trio.open_nursery())
            self._stack.callback(nursery.cancel_scope.cancel)
            target = self.target
            if isinstance(target, Registry):
                target = Engine(target)
            if isinstance(target, Engine):
                self._transport = EngineTransport(target, self.principal, nursery)
            else:
                node = target if isinstance(target, InProcessApp) else await self._stack.enter_async_context(
                    InProcessApp(target))
                self.node = node
                self._transport = HttpTransport(node)
            await self._handshake()
        except BaseException as exc:
            await exit_stack(self._stack, type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, etype: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        if self.session_id is not None and etype is None:
            await self._transport_or_fail().send("DELETE", self._legacy_headers(), None)
            self.session_id = None
        return await exit_stack(self._stack, etype, exc, tb)

    async def _handshake(self) -> None:
        if self.era == "modern":
            found = await self.request("server/discover")
            self.server_capabilities = dict(found.get("capabilities") or {})
            self.server_info = dict((found.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo") or {})
            return
        body = {"jsonrpc": "2.0", "id": self._next_id(), "method": "initialize", "params": {
            "protocolVersion": self.version, "capabilities": self.capabilities, "clientInfo": self.client_info}}
        headers = {"content-type": "application/json", "accept": ACCEPT, **self.extra_headers}
        status, answer_headers, answer = await self._transport_or_fail().rpc(body, headers, self._on_message(None),
                                                                            cancel_notice=None)
        result = self._result(status, answer)
        self.version = str(result["protocolVersion"])
        self.session_id = answer_headers.get("mcp-session-id")
        if self.session_id is None:
            raise RuntimeError(f"initialize answered without an Mcp-Session-Id header: HTTP {status}")
        self.server_info = dict(result.get("serverInfo") or {})
        self.server_capabilities = dict(result.get("capabilities") or {})
        status, _ = await self._transport_or_fail().send(
            "POST", self._legacy_headers(), {"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status != 202:
            raise RuntimeError(f"notifications/initialized: HTTP {status}")
        if self.log_level is not None and "logging" in self.server_capabilities:
            await self.request("logging/setLevel", {"level": self.log_level})

    # -- tools, resources, prompts ------------------------------------------------------------------------
    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool (all pages)."""
        tools = await self._list("tools/list", "tools")
        self._tool_schemas = {str(t["name"]): dict(t.get("inputSchema") or {}) for t in tools}
        return tools

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                        on_notification: NotificationHandler | None = None) -> dict[str, Any]:
        """Call a tool; its ``CallToolResult`` as the server sent it (``isError`` for a failed tool).

        Modern era: the first call of a tool lists the tools (as a client does) to learn which
        arguments go in ``Mcp-Param-*`` headers."""
        if self.era == "modern" and name not in self._tool_schemas:
            await self.list_tools()
        return await self._with_input("tools/call", {"name": name, "arguments": dict(arguments or {})},
                                      on_notification=on_notification)

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._list("resources/list", "resources")

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return await self._list("resources/templates/list", "resourceTemplates")

    async def read_resource(self, uri: str, *, on_notification: NotificationHandler | None = None) -> dict[str, Any]:
        """A ``ReadResourceResult`` (``contents``)."""
        return await self._with_input("resources/read", {"uri": uri}, on_notification=on_notification)

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._list("prompts/list", "prompts")

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None = None, *,
                         on_notification: NotificationHandler | None = None) -> dict[str, Any]:
        """A ``GetPromptResult`` (``messages``)."""
        return await self._with_input("prompts/get", {"name": name, "arguments": dict(arguments or {})},
                                      on_notification=on_notification)

    async def set_log_level(self, level: str | None) -> None:
        """From which level the server sends log messages (legacy: ``logging/setLevel``; modern: the
        level every later request carries; None: none, in the modern era)."""
        self.log_level = level
        if self.era == "legacy" and level is not None:
            await self.request("logging/setLevel", {"level": level})

    # -- tasks ----------------------------------------------------------------------------------------------
    async def call_tool_as_task(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                                ttl_ms: int | None = None) -> dict[str, Any]:
        """Call a tool as a task (legacy: ``params.task``; modern: declaring the tasks extension, after
        any input-required rounds); the task as created (``taskId``, ``status``, ...)."""
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        if self.era == "legacy":
            params["task"] = {} if ttl_ms is None else {"ttl": ttl_ms}
            result = await self.request("tools/call", params)
            if "task" not in result:
                raise RuntimeError(f"{name} was answered without a task: {result}")
            task: dict[str, Any] = result["task"]
            return task
        if name not in self._tool_schemas:
            await self.list_tools()
        result = await self._with_input("tools/call", params, on_notification=None, tasks=True)
        if result.get("resultType") != "task":
            raise RuntimeError(f"{name} was answered without a task (resultType {result.get('resultType')!r})")
        return result

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """``tasks/get``: the task's status (modern: its result or error inlined once it is done)."""
        return await self.request("tasks/get", {"taskId": task_id}, tasks=True)

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        """``tasks/cancel`` (legacy: the cancelled task; modern: an acknowledgement)."""
        return await self.request("tasks/cancel", {"taskId": task_id}, tasks=True)

    async def wait_task(self, task_id: str) -> dict[str, Any]:
        """Until the task is done; its final ``tasks/get`` with ``result`` (completed) or ``error``
        (failed) in it, in either era. Modern: input the task asks for is answered (``tasks/update``)
        by the client's handlers; the wait follows the task's notifications (``subscriptions/listen``).
        Legacy: a blocking ``tasks/result``."""
        if self.era == "legacy":
            final: dict[str, Any] = {}
            try:
                final["result"] = await self.request("tasks/result", {"taskId": task_id})
            except McpError as err:
                final["error"] = err.error
            return {**await self.get_task(task_id), **final}
        answered: set[str] = set()
        async with self.listen({"taskIds": [task_id]}, tasks=True) as subscription:
            while True:
                task = await self.get_task(task_id)
                if task.get("status") in TERMINAL_TASK_STATUSES:
                    return task
                asked = {key: request for key, request in (task.get("inputRequests") or {}).items()
                         if key not in answered}
                if task.get("status") == "input_required" and asked:
                    answers = await self._answer_all(asked)
                    answered |= set(answers)
                    await self.request("tasks/update", {"taskId": task_id, "inputResponses": answers}, tasks=True)
                    continue
                if await subscription.next() is None:
                    raise RuntimeError(f"the listen stream ended before task {task_id} did")

    # -- subscriptions (modern, app targets) ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def listen(self, notifications: Mapping[str, Any], *, tasks: bool = False) -> AsyncIterator[Subscription]:
        """Modern ``subscriptions/listen`` for the block (``{"toolsListChanged": True}``,
        ``{"resourceSubscriptions": [uri]}``, ``{"taskIds": [id]}``); app targets only."""
        transport = self._transport_or_fail()
        if self.era != "modern" or not isinstance(transport, HttpTransport):
            raise RuntimeError("listen() needs the modern era and an app target (McpTestClient(create_app(...)))")
        params = {"notifications": dict(notifications), "_meta": self._meta(tasks=tasks or "taskIds" in notifications,
                                                                             progress=False)}
        body = {"jsonrpc": "2.0", "id": self._next_id(), "method": "subscriptions/listen", "params": params}
        async with transport.node.stream("POST", "/mcp", headers=self._headers("subscriptions/listen", params),
                                         body=body) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raw = await response.read()
                self._result(response.status, json.loads(raw) if raw else None)
                raise RuntimeError(f"subscriptions/listen answered HTTP {response.status} without a stream")
            first = await response.next_event()
            if first is None or not first.data:
                raise RuntimeError("subscriptions/listen: the stream ended before its acknowledgement")
            yield Subscription(response, first.json())
