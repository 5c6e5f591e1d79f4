"""Route a validated request to its handler, in both eras.

Methods that need no I/O (lists, discover, ping, setLevel, subscribe) are answered at once with a
:class:`Reply`. Methods that run user code (tools, resource reads, prompts, completions, tasks)
return a :class:`Call` that the transport awaits. Every request's params are checked against the
official schema of its protocol version first (``mcp_types``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import methods as spec
from pydantic import ValidationError

from triomcp.errors import InternalError, InvalidParams, MethodNotFound, ProtocolError, TriomcpError
from triomcp.mcp import jsonrpc
from triomcp.mcp.config import AsyncHandler, SyncHandler
from triomcp.mcp.context import LOG_LEVELS, Outbound, ToolContext
from triomcp.mcp.core import Core, Request
from triomcp.mcp.inputs import inputs
from triomcp.mcp.lifecycle import Lifecycle, validation_message
from triomcp.mcp.listeners import Listeners
from triomcp.mcp.outcomes import Call, Listen, Reply
from triomcp.mcp.prompts import Prompts
from triomcp.mcp.resources import Resources
from triomcp.mcp.task_methods import TaskMethods
from triomcp.mcp.tools import Tools
from triomcp.mcp.versions import Era

__all__ = ["Dispatcher"]


class Dispatcher:
    """The method tables of one engine, built once from its features."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.lifecycle = Lifecycle(core)
        self.listeners = Listeners(core)
        self._sync: dict[str, SyncHandler] = dict(self.lifecycle.handlers())
        self._async: dict[str, AsyncHandler] = {}
        for feature in (Tools(core), Resources(core), Prompts(core)):
            sync, run = feature.handlers()
            self._sync.update(sync)
            self._async.update(run)
        self._extension: dict[Era, dict[str, AsyncHandler]] = {Era.LEGACY: {}, Era.MODERN: {}}
        """Methods outside the base protocol: the tasks of either era, when a task store is given."""
        if core.tasks is not None:
            tasks = TaskMethods(core, core.tasks)
            self._extension = {Era.LEGACY: tasks.legacy(), Era.MODERN: tasks.modern()}

    def is_extension(self, method: str, era: Era) -> bool:
        return method in self._extension[era]

    def dispatch(self, req: Request, *, accepts_sse: bool) -> Reply | Call | Listen:
        method = req.message.method
        if req.era is Era.MODERN and method == "subscriptions/listen":
            self._validate(req)
            return self.listeners.listen(req)
        sync = self._sync.get(method)
        if sync is not None:
            self._validate(req)
            return Reply(200, jsonrpc.result_response(req.id, self.core.finish(req, sync(req))))
        handler = self._async.get(method)
        if handler is not None:
            self._validate(req)
        else:
            handler = self._extension[req.era].get(method)
            if handler is None:
                raise MethodNotFound(f"Method not found: {method}")
        name = None
        if method == "tools/call":
            name = str(req.params.get("name"))
            guard = self.core.hooks.guard_tool
            if guard is not None:
                tool = self.core.registry.get_tool(name)
                if tool is not None:
                    guard(req, tool)
        return Call(era=req.era, version=req.version, request_id=req.id, method=method, accepts_sse=accepts_sse,
                    session=req.session, headers=req.headers, _runner=self._runner(req, handler), tool=name)

    @staticmethod
    def _validate(req: Request) -> None:
        """Check params against the official schema of the request's version."""
        method = req.message.method
        if (method, req.version) not in spec.CLIENT_REQUESTS:
            raise MethodNotFound(f"Method not found: {method} (not in protocol {req.version})")
        try:
            spec.validate_client_request(method, req.version, req.message.raw.get("params"))
        except ValidationError as exc:
            raise InvalidParams(f"Invalid params: {validation_message(exc)}") from None

    def _runner(self, req: Request, handler: AsyncHandler) -> Callable[[Outbound], Awaitable[dict[str, Any] | None]]:
        core = self.core

        async def run(outbound: Outbound) -> dict[str, Any] | None:
            core.inflight += 1
            try:
                try:
                    result = await handler(req, self._context(req, outbound))
                except ProtocolError as err:
                    return jsonrpc.error_response(req.id, err)
                except TriomcpError as err:  # e.g. the task store is unavailable: say so, not a bare 500
                    return jsonrpc.error_response(req.id, InternalError(err.message, data={"code": err.code}))
                return jsonrpc.result_response(req.id, core.finish(req, result))
            finally:
                core.inflight -= 1
                if req.session is not None:
                    req.session.inflight.pop(req.id, None)

        return run

    def _context(self, req: Request, outbound: Outbound) -> ToolContext:
        meta = req.meta
        if req.era is Era.LEGACY:
            assert req.session is not None
            log_level: str | None = req.session.log_level
        else:
            level = meta.get("io.modelcontextprotocol/logLevel")
            log_level = level if level in LOG_LEVELS else None
        responses, verified = inputs(self.core, req)
        return ToolContext(
            era=req.era, protocol_version=req.version, request_id=req.id, principal=req.principal,
            client_capabilities=req.client_capabilities, outbound=outbound, progress_token=meta.get("progressToken"),
            log_level=log_level, input_responses=responses, session_id=req.session.id if req.session else None,
            app_state=self.core.hooks.app_state, request_state_verified=verified,
            http_headers=req.headers or None)  # non-HTTP transports hand the engine no headers
