"""The MCP methods: what each request does, in both eras.

Methods that need no I/O (lists, discover, ping, setLevel, subscribe) are
answered at once with a :class:`Reply`. Methods that run user code (tools,
resource reads, prompts, completions) return a :class:`Call` that the
transport awaits.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mcp_types import SERVER_INFO_META_KEY
from mcp_types import methods as spec
from pydantic import BaseModel, ValidationError

from triomcp.errors import (
    InternalError,
    InvalidParams,
    MethodNotFound,
    MissingCapability,
    ProtocolError,
    RemoteError,
    ResourceNotFound,
    ToolError,
    TriomcpError,
)
from triomcp.mcp import jsonrpc
from triomcp.mcp.context import LOG_LEVELS, BecomeTask, InputRequired, Outbound, ToolContext
from triomcp.mcp.headers import check_param_headers
from triomcp.mcp.jsonrpc import Message
from triomcp.mcp.outcomes import Call, Listen, Reply
from triomcp.mcp.registry import Registry, ResourceDef, ToolDef, ToolResult
from triomcp.mcp.request_state import RequestStateSigner, arguments_digest
from triomcp.mcp.session import Session, SessionStore
from triomcp.mcp.tasks import (
    RELATED_TASK_META_KEY,
    TASKS_EXTENSION,
    TaskBackend,
    TaskRecord,
    legacy_task,
    modern_task,
)
from triomcp.mcp.versions import LATEST_LEGACY_VERSION, LEGACY_VERSIONS, SUPPORTED_VERSIONS, Era

if TYPE_CHECKING:
    from triomcp.mcp.engine import EngineConfig

__all__ = ["SUBSCRIPTION_ID_META_KEY", "Methods", "Request"]

log = logging.getLogger("triomcp.mcp")

SUBSCRIPTION_ID_META_KEY = "io.modelcontextprotocol/subscriptionId"
INPUT_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
"""Methods whose handlers may ask the client for input (modern era: input-required results)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request, era-independent."""

    era: Era
    version: str
    message: Message
    principal: str | None
    session: Session | None
    client_capabilities: dict[str, Any]
    headers: dict[str, str]
    auth: Any = None
    executing_task: bool = False
    """The call is a task's own execution (a worker running it): never make it a task again."""

    @property
    def id(self) -> str | int:
        ident = self.message.id
        assert ident is not None
        return ident

    @property
    def params(self) -> dict[str, Any]:
        return self.message.params

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}


AsyncHandler = Callable[[Request, ToolContext], Awaitable[dict[str, Any]]]
SyncHandler = Callable[[Request], dict[str, Any]]


class _TaskFailure(ProtocolError):
    """``tasks/result`` of a failed task: the task's own JSON-RPC error, passed through."""

    def __init__(self, error: dict[str, Any], meta: dict[str, Any]) -> None:
        data = error.get("data")
        super().__init__(str(error.get("message", "the task failed")),
                         data={**(data or {}), "_meta": meta} if isinstance(data, dict) or data is None else data)
        code = error.get("code")
        self.jsonrpc_code = code if isinstance(code, int) else -32603


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode("ascii")


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(str(cursor).encode("ascii")).decode("ascii")
        if not text.startswith("o:"):
            raise ValueError(text)
        offset = int(text[2:])
        if offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidParams(f"Invalid cursor: {cursor!r}") from None


class Methods:
    """Implements every method; owned by :class:`~triomcp.mcp.engine.Engine`."""

    def __init__(
        self,
        *,
        registry: Registry,
        sessions: SessionStore,
        config: EngineConfig,
        signer: RequestStateSigner,
        app_state: Any,
        wall_clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.config = config
        self.signer = signer
        self.app_state = app_state
        self.wall_clock = wall_clock
        self.inflight = 0
        self.listeners: dict[int, tuple[Listen, Callable[[dict[str, Any] | None], None]]] = {}
        self._next_listener = 0
        self.extra_modern: dict[str, AsyncHandler] = {}
        """Extension methods (modern era), e.g. the tasks extension."""
        self.extra_legacy: dict[str, AsyncHandler] = {}
        self.tasks: TaskBackend | None = None
        """Set by :meth:`enable_tasks`: MCP tasks (both eras) backed by the server's queue."""
        self.forward_tool: Callable[[str, dict[str, Any], ToolContext], Awaitable[dict[str, Any]]] | None = None
        """Set in ``local-node`` mode: run every tool call on the local node instead (same registry)."""
        self.forward_resource: Callable[[str, str | None], Awaitable[dict[str, Any]]] | None = None
        """Set in ``local-node`` mode: read resources from the local node."""
        self.call_observer: Callable[[str, str, str, float], None] | None = None
        """Set by the server: ``(tool, era, outcome, seconds)`` after every tool call (metrics)."""
        self.tool_guard: Callable[[Request, ToolDef], None] | None = None
        """Set by the server: raises HttpError(403, ...) when the caller may not call a tool.

        Checked before the call starts, so the refusal is an HTTP answer in both eras."""
        self._sync: dict[str, SyncHandler] = {
            "ping": self._ping,
            "logging/setLevel": self._set_level,
            "tools/list": self._tools_list,
            "resources/list": self._resources_list,
            "resources/templates/list": self._templates_list,
            "prompts/list": self._prompts_list,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "server/discover": self._discover,
        }
        self._async: dict[str, AsyncHandler] = {
            "tools/call": self._tools_call,
            "resources/read": self._resources_read,
            "prompts/get": self._prompts_get,
            "completion/complete": self._complete,
        }
        registry.on_change(self._registry_changed)

    # -- capabilities -----------------------------------------------------------
    def capabilities(self, era: Era) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "completions": {},
        }
        if era is Era.LEGACY:
            caps["logging"] = {}
        if self.tasks is not None:
            if era is Era.LEGACY:
                caps["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
            else:
                caps["extensions"] = {TASKS_EXTENSION: {}}
        return caps

    def enable_tasks(self, backend: TaskBackend) -> None:
        """Serve MCP tasks from ``backend`` (legacy ``tasks/*`` and the modern extension)."""
        self.tasks = backend
        self.extra_legacy.update({
            "tasks/get": self._legacy_task_get,
            "tasks/result": self._legacy_task_result,
            "tasks/list": self._legacy_task_list,
            "tasks/cancel": self._legacy_task_cancel,
        })
        self.extra_modern.update({
            "tasks/get": self._modern_task_get,
            "tasks/update": self._modern_task_update,
            "tasks/cancel": self._modern_task_cancel,
        })

    def server_info(self) -> dict[str, Any]:
        return {"name": self.config.server_name, "version": self.config.server_version}

    # -- dispatch ------------------------------------------------------------------
    def dispatch(self, req: Request, *, accepts_sse: bool) -> Reply | Call | Listen:
        method = req.message.method
        if req.era is Era.MODERN and method == "subscriptions/listen":
            self._validate(req)
            return self._listen(req)
        sync = self._sync.get(method)
        if sync is not None:
            self._validate(req)
            return Reply(200, jsonrpc.result_response(req.id, self._finish(req, sync(req))))
        handler = self._async.get(method)
        if handler is None:
            extra = self.extra_modern if req.era is Era.MODERN else self.extra_legacy
            handler = extra.get(method)
            if handler is None:
                raise MethodNotFound(f"Method not found: {method}")
        else:
            self._validate(req)
        if method == "tools/call" and self.tool_guard is not None:
            tool = self.registry.get_tool(str(req.params.get("name")))
            if tool is not None:
                self.tool_guard(req, tool)
        return Call(
            era=req.era,
            version=req.version,
            request_id=req.id,
            method=method,
            accepts_sse=accepts_sse,
            session=req.session,
            headers=req.headers,
            _runner=self._runner(req, handler),
        )

    def _validate(self, req: Request) -> None:
        """Check params against the official schema of the request's version."""
        method = req.message.method
        if (method, req.version) not in spec.CLIENT_REQUESTS:
            raise MethodNotFound(f"Method not found: {method} (not in protocol {req.version})")
        try:
            spec.validate_client_request(method, req.version, req.message.raw.get("params"))
        except ValidationError as exc:
            raise InvalidParams(f"Invalid params: {_validation_message(exc)}") from None

    def _runner(self, req: Request, handler: AsyncHandler) -> Callable[[Outbound], Awaitable[dict[str, Any] | None]]:
        async def run(outbound: Outbound) -> dict[str, Any] | None:
            self.inflight += 1
            try:
                try:
                    ctx = self._context(req, outbound)
                    result = await handler(req, ctx)
                except ProtocolError as err:
                    return jsonrpc.error_response(req.id, err)
                except TriomcpError as err:  # e.g. the task store is unavailable: say so, not a bare 500
                    return jsonrpc.error_response(req.id, InternalError(err.message, data={"code": err.code}))
                return jsonrpc.result_response(req.id, self._finish(req, result))
            finally:
                self.inflight -= 1
                if req.session is not None:
                    req.session.inflight.pop(req.id, None)

        return run

    def _context(self, req: Request, outbound: Outbound) -> ToolContext:
        meta = req.meta
        if req.era is Era.LEGACY:
            assert req.session is not None
            log_level = req.session.log_level
        else:
            level = meta.get("io.modelcontextprotocol/logLevel")
            log_level = level if level in LOG_LEVELS else None
        responses, verified = self._inputs(req)
        return ToolContext(
            era=req.era,
            protocol_version=req.version,
            request_id=req.id,
            principal=req.principal,
            client_capabilities=req.client_capabilities,
            outbound=outbound,
            progress_token=meta.get("progressToken"),
            log_level=log_level,
            input_responses=responses,
            session_id=req.session.id if req.session else None,
            app_state=self.app_state,
            request_state_verified=verified,
        )

    # -- input rounds (modern era) --------------------------------------------------------
    @staticmethod
    def _binding(req: Request) -> dict[str, Any]:
        """What a ``requestState`` is bound to: the method, its target, the arguments, the principal."""
        method = req.message.method
        if method == "resources/read":
            return {"m": method, "t": req.params.get("uri"), "p": req.principal}
        return {"m": method, "t": req.params.get("name"), "a": arguments_digest(req.params.get("arguments") or {}),
                "p": req.principal}

    def _inputs(self, req: Request) -> tuple[dict[str, Any], bool]:
        """The answers a request brings (its ``inputResponses`` over those its verified ``requestState``
        carries from earlier rounds), and whether a ``requestState`` came and was verified.

        ``inputResponses`` without a ``requestState`` are taken as they are: they are the client's
        answers either way; the state only carries what the server had gathered before."""
        if req.era is not Era.MODERN or req.message.method not in INPUT_METHODS:
            return {}, False
        raw = req.params.get("inputResponses")
        if "inputResponses" in req.params and not isinstance(raw, dict):
            raise InvalidParams("inputResponses must be an object mapping each input request's key to its result")
        responses = dict(raw or {})
        token = req.params.get("requestState")
        if token is None or req.executing_task:
            return responses, False
        if not isinstance(token, str):
            raise InvalidParams("requestState must be a string")
        claims = self.signer.verify(token, self._binding(req), now=self.wall_clock())
        carried = claims.get("r")
        return ({**carried, **responses} if isinstance(carried, dict) else responses), True

    def _input_required(self, req: Request, need: InputRequired) -> dict[str, Any]:
        """An ``InputRequiredResult``; its ``requestState`` carries the answers used so far."""
        if req.era is not Era.MODERN:
            raise ToolError("input required outside the modern era")
        out: dict[str, Any] = {"resultType": "input_required", "inputRequests": need.requests}
        if not req.executing_task:  # a task's own run keeps its answers in the queue, not in a token
            out["requestState"] = self.signer.sign({**self._binding(req), "r": need.answers}, now=self.wall_clock())
        return out

    def _finish(self, req: Request, result: dict[str, Any]) -> dict[str, Any]:
        """Era decorations: ``resultType``, server info, cache directives."""
        if req.era is Era.MODERN:
            result.setdefault("resultType", "complete")
            meta = result.setdefault("_meta", {})
            meta.setdefault(SERVER_INFO_META_KEY, self.server_info())
            if req.message.method in spec.CACHEABLE_METHODS:
                result.setdefault("ttlMs", self.config.list_ttl_ms)
                result.setdefault("cacheScope", "private")
        return result

    # -- legacy lifecycle -----------------------------------------------------------
    def initialize(self, msg: Message, *, principal: str | None, now: float) -> Reply:
        params = msg.raw.get("params")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        version = requested if requested in LEGACY_VERSIONS else LATEST_LEGACY_VERSION
        try:
            spec.validate_client_request("initialize", version, params)
        except ValidationError as exc:
            return Reply(
                400,
                jsonrpc.error_response(msg.id, InvalidParams(f"Invalid params: {_validation_message(exc)}")),
            )
        assert isinstance(params, dict)
        session = self.sessions.create(
            principal=principal,
            protocol_version=version,
            client_capabilities=dict(params.get("capabilities") or {}),
            client_info=dict(params.get("clientInfo") or {}),
            now=now,
        )
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self.capabilities(Era.LEGACY),
            "serverInfo": self.server_info(),
        }
        if self.config.instructions:
            result["instructions"] = self.config.instructions
        assert msg.id is not None
        return Reply(200, jsonrpc.result_response(msg.id, result), {"mcp-session-id": session.id})

    def legacy_notification(self, session: Session, msg: Message) -> None:
        method = msg.method
        if method == "notifications/initialized":
            session.fire("initialized")
        elif method == "notifications/cancelled":
            request_id = msg.params.get("requestId")
            cancel = session.inflight.get(request_id) if isinstance(request_id, (str, int)) else None
            if cancel is not None:
                log.debug("session %s: request %r cancelled by the client", session.id[:8], request_id)
                cancel()
        # Other notifications (progress, roots/list_changed) need no action here.

    def legacy_response(self, session: Session, msg: Message) -> None:
        ident = msg.raw.get("id")
        resolver = session.pending.pop(ident, None) if isinstance(ident, (str, int)) else None
        if resolver is None:
            log.debug("session %s: response to unknown server request %r ignored", session.id[:8], ident)
            return
        resolver(msg.raw)

    # -- simple methods -------------------------------------------------------------------
    def _ping(self, req: Request) -> dict[str, Any]:
        return {}

    def _set_level(self, req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.log_level = str(req.params["level"])
        return {}

    def _discover(self, req: Request) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(SUPPORTED_VERSIONS),
            "capabilities": self.capabilities(Era.MODERN),
            # serverInfo goes in result _meta only (_finish adds it): DiscoverResult has no such field.
        }
        if self.config.instructions:
            result["instructions"] = self.config.instructions
        return result

    def _page(self, req: Request, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        offset = _decode_cursor(req.params.get("cursor"))
        if offset > len(items):
            raise InvalidParams(f"Invalid cursor: {req.params.get('cursor')!r}")
        size = self.config.page_size
        result: dict[str, Any] = {key: items[offset : offset + size]}
        if offset + size < len(items):
            result["nextCursor"] = _encode_cursor(offset + size)
        return result

    def _tools_list(self, req: Request) -> dict[str, Any]:
        tools = [t.describe for t in self.registry.tools()]
        if self.tasks is None or req.era is Era.MODERN:
            # taskSupport is the legacy utility's; the extension lets the server decide per request.
            tools = [{k: v for k, v in t.items() if k != "execution"} if "execution" in t else t for t in tools]
        return self._page(req, tools, "tools")

    def _resources_list(self, req: Request) -> dict[str, Any]:
        return self._page(req, [r.describe() for r in self.registry.resources()], "resources")

    def _templates_list(self, req: Request) -> dict[str, Any]:
        return self._page(req, [t.describe() for t in self.registry.templates()], "resourceTemplates")

    def _prompts_list(self, req: Request) -> dict[str, Any]:
        return self._page(req, [p.describe() for p in self.registry.prompts()], "prompts")

    def _subscribe(self, req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.subscriptions.add(str(req.params["uri"]))
        return {}

    def _unsubscribe(self, req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.subscriptions.discard(str(req.params["uri"]))
        return {}

    # -- tools -----------------------------------------------------------------------------
    async def _tools_call(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        name = req.params["name"]
        tool = self.registry.get_tool(name)
        if tool is None:
            raise InvalidParams(f"Unknown tool: {name}")
        arguments = req.params.get("arguments") or {}
        if req.era is Era.MODERN and tool.header_params:
            check_param_headers(tool.header_params, arguments, req.headers)
        try:
            args = tool.input_model.model_validate(arguments)
        except ValidationError as exc:
            if self.call_observer is not None:
                self.call_observer(name, req.era.value, "invalid_arguments", 0.0)
            return self._tool_failure("invalid_arguments", f"Invalid arguments: {_validation_message(exc)}",
                                      structured=tool.structured)
        when = self._task_decision(req, tool)
        if when == "call":
            return await self._create_task(req, tool, arguments, {})
        ctx.may_become_task = when == "handler"
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            if self.forward_tool is not None:
                forwarded = await self.forward_tool(name, arguments, ctx)
                outcome = "error" if forwarded.get("isError") else "ok"
                return forwarded
            output = await tool.fn(args, ctx)
            outcome = "ok"
        except BecomeTask as become:
            outcome = "task"
            return await self._create_task(req, tool, arguments, become.answers)
        except InputRequired as need:
            outcome = "input_required"
            return self._input_required(req, need)
        except ProtocolError:
            outcome = "protocol_error"
            raise
        except TriomcpError as err:
            outcome = "error"
            return self._tool_failure(err.code, err.message, err.data, structured=tool.structured)
        except Exception as exc:
            outcome = "error"
            log.exception("tool %s failed", name)
            return self._tool_failure("internal_error", f"{type(exc).__name__}: {exc}", structured=tool.structured)
        finally:
            if self.call_observer is not None:
                self.call_observer(name, req.era.value, outcome, time.perf_counter() - started)
        return self._tool_success(tool, output)

    async def _create_task(self, req: Request, tool: ToolDef, arguments: dict[str, Any],
                           answers: dict[str, Any]) -> dict[str, Any]:
        """Commit the call as a durable task (before answering) and answer ``CreateTaskResult``."""
        assert self.tasks is not None
        ttl = (req.params.get("task") or {}).get("ttl") if req.era is Era.LEGACY else None
        record = await self.tasks.create(
            tool=tool.name, arguments=arguments, principal=req.principal,
            ttl_ms=int(ttl) if isinstance(ttl, (int, float)) and ttl >= 0 else None,
            session_id=req.session.id if req.session else None,
            # A modern task may ask its client for input (tasks/update answers); a legacy one has no way to.
            client_capabilities=req.client_capabilities if req.era is Era.MODERN else {},
            input_responses=answers)
        if req.era is Era.LEGACY:
            return {"task": legacy_task(record)}
        return {**modern_task(record), "resultType": "task"}

    @staticmethod
    def _declares_tasks(req: Request) -> bool:
        extensions = req.client_capabilities.get("extensions")
        return isinstance(extensions, dict) and TASKS_EXTENSION in extensions

    def _require_tasks_extension(self, req: Request, why: str) -> None:
        if not self._declares_tasks(req):
            raise MissingCapability(
                f"{why}: declare the {TASKS_EXTENSION!r} extension in the client capabilities",
                data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})

    def _task_decision(self, req: Request, tool: ToolDef) -> Literal["call", "handler"] | None:
        """Whether this call becomes a task, and when (a protocol error when the two sides disagree).

        Legacy: when the request asks for one (``params.task``). Modern: the server decides; a tool
        with task support becomes a task for every client that declared the extension, and a tool
        that requires it is refused (-32021) to the others."""
        if req.executing_task or self.tasks is None:
            return None
        if req.era is Era.LEGACY:
            wanted = req.params.get("task") is not None
            if wanted and tool.task_support == "forbidden":
                raise MethodNotFound(f"tool {tool.name!r} does not support task execution (taskSupport: forbidden)")
            if not wanted and tool.task_support == "required":
                raise MethodNotFound(f"tool {tool.name!r} must be called as a task (taskSupport: required)")
            return tool.task_start if wanted else None
        if tool.task_support == "forbidden":
            return None
        if not self._declares_tasks(req):
            if tool.task_support == "required":
                self._require_tasks_extension(req, f"tool {tool.name!r} runs as a task")
            return None
        return tool.task_start

    # -- tasks ----------------------------------------------------------------------------
    @staticmethod
    def _task_id(req: Request) -> str:
        task_id = req.params.get("taskId")
        if not isinstance(task_id, str) or not task_id:
            raise InvalidParams("params.taskId must be a non-empty string")
        return task_id

    def _backend(self) -> TaskBackend:
        assert self.tasks is not None
        return self.tasks

    async def _legacy_task_get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        return legacy_task(await self._backend().get(self._task_id(req), req.principal))

    async def _legacy_task_result(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        task_id = self._task_id(req)
        record = await self._backend().wait(task_id, req.principal)
        related = {RELATED_TASK_META_KEY: {"taskId": task_id}}
        if record.status == "completed" and record.result is not None:
            result = dict(record.result)
            result["_meta"] = {**(result.get("_meta") or {}), **related}
            return result
        if record.status == "failed" and record.error:
            raise _TaskFailure(record.error, related)
        raise InvalidParams(f"task {task_id} was {record.status}; it has no result", data={"_meta": related})

    async def _legacy_task_list(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        cursor = req.params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidParams("params.cursor must be a string")
        records, next_cursor = await self._backend().list(req.principal, cursor, self.config.page_size)
        out: dict[str, Any] = {"tasks": [legacy_task(r) for r in records]}
        if next_cursor:
            out["nextCursor"] = next_cursor
        return out

    async def _legacy_task_cancel(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        task_id = self._task_id(req)
        record = await self._backend().get(task_id, req.principal)
        if record.terminal:
            raise InvalidParams(f"Cannot cancel task: already in terminal status {record.status!r}")
        return legacy_task(await self._backend().cancel(task_id, req.principal, wait=True))

    async def _modern_task_get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        self._require_tasks_extension(req, "tasks/get is a method of the tasks extension")
        return modern_task(await self._backend().get(self._task_id(req), req.principal))

    async def _modern_task_update(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        """Answers to an ``input_required`` task's requests; keys not outstanding are ignored, and a
        partial answer keeps the task waiting for the rest. The ack comes before the task runs on."""
        self._require_tasks_extension(req, "tasks/update is a method of the tasks extension")
        responses = req.params.get("inputResponses")
        if not isinstance(responses, dict):
            raise InvalidParams("params.inputResponses must be an object mapping request keys to results")
        await self._backend().update(self._task_id(req), req.principal, responses)
        return {}

    async def _modern_task_cancel(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        """Cooperative and eventually consistent: the ack does not wait for the handler to stop."""
        self._require_tasks_extension(req, "tasks/cancel is a method of the tasks extension")
        await self._backend().cancel(self._task_id(req), req.principal, wait=False)
        return {}

    def task_changed(self, record: TaskRecord, session_id: str | None) -> None:
        """Status notifications: the legacy session that created the task, modern listeners on it."""
        if session_id is not None:
            session = self.sessions.peek(session_id)
            if session is not None:
                session.open_stream("get").push(
                    jsonrpc.notification("notifications/tasks/status", legacy_task(record)))
        for listen, deliver in list(self.listeners.values()):
            if record.task_id in listen.notifications.get("taskIds", ()):
                params = {**modern_task(record), "_meta": {SUBSCRIPTION_ID_META_KEY: listen.request_id}}
                deliver(jsonrpc.notification("notifications/tasks", params))

    def _tool_success(self, tool: ToolDef, output: Any) -> dict[str, Any]:
        extra: list[dict[str, Any]] = []
        if isinstance(output, ToolResult):
            extra = list(output.content)
            output = output.data
        if not tool.structured:  # exactly the content blocks the tool returned
            if output is not None:
                extra.insert(0, {"type": "text", "text": output if isinstance(output, str) else json.dumps(
                    output.model_dump(mode="json") if isinstance(output, BaseModel) else output, ensure_ascii=False)})
            return {"content": extra, "isError": False}
        if isinstance(output, BaseModel):
            data = output.model_dump(mode="json", by_alias=True)
        elif isinstance(output, dict):
            data = dict(output)
        elif output is None:
            data = {}
        else:
            data = {"value": output}
        structured = {"ok": True, **data}
        text = json.dumps(structured, separators=(",", ":"), ensure_ascii=False)
        return {
            "content": [{"type": "text", "text": text}, *extra],
            "structuredContent": structured,
            "isError": False,
        }

    @staticmethod
    def _tool_failure(code: str, message: str, data: Any = None, *, structured: bool = True) -> dict[str, Any]:
        if not structured:
            return {"content": [{"type": "text", "text": message}], "isError": True}
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        structured = {"ok": False, "error": error}
        return {
            "content": [{"type": "text", "text": json.dumps(structured, separators=(",", ":"), ensure_ascii=False)}],
            "structuredContent": structured,
            "isError": True,
        }

    # -- resources -------------------------------------------------------------------------
    async def _resources_read(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        uri = str(req.params["uri"])
        found = self.registry.find_resource(uri)
        if found is not None and self.forward_resource is not None:
            try:
                return await self.forward_resource(uri, req.principal)
            except RemoteError as err:
                if req.era is Era.MODERN:
                    raise InvalidParams(f"Resource not found: {uri} ({err})", data={"uri": uri}) from None
                raise ResourceNotFound(f"Resource not found: {uri} ({err})", data={"uri": uri}) from None
            except TriomcpError as err:  # the local node is not reachable
                raise InternalError(f"reading {uri}: {err.message}") from None
        if found is None:
            if req.era is Era.MODERN:
                raise InvalidParams(f"Resource not found: {uri}", data={"uri": uri})
            raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
        definition, variables = found
        try:
            if isinstance(definition, ResourceDef):
                body = await definition.fn(ctx)
            else:
                body = await definition.fn(variables, ctx)
        except InputRequired as need:
            return self._input_required(req, need)
        except ResourceNotFound:
            if req.era is Era.MODERN:
                raise InvalidParams(f"Resource not found: {uri}", data={"uri": uri}) from None
            raise
        return {"contents": self._contents(uri, definition.mime_type, body)}

    @staticmethod
    def _contents(uri: str, mime_type: str | None, body: str | bytes | list[dict[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(body, list):
            return body
        item: dict[str, Any] = {"uri": uri}
        if mime_type:
            item["mimeType"] = mime_type
        if isinstance(body, bytes):
            item["blob"] = base64.b64encode(body).decode("ascii")
        else:
            item["text"] = body
        return [item]

    # -- prompts and completion ------------------------------------------------------------
    async def _prompts_get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        name = str(req.params["name"])
        prompt = self.registry.get_prompt(name)
        if prompt is None:
            raise InvalidParams(f"Unknown prompt: {name}")
        arguments = {str(k): str(v) for k, v in (req.params.get("arguments") or {}).items()}
        missing = [n for n, _d, required in prompt.arguments if required and n not in arguments]
        if missing:
            raise InvalidParams(f"Missing required prompt arguments: {', '.join(missing)}")
        try:
            messages = await prompt.fn(arguments, ctx)
        except InputRequired as need:
            return self._input_required(req, need)
        result: dict[str, Any] = {"messages": messages}
        if prompt.description:
            result["description"] = prompt.description
        return result

    async def _complete(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        ref = req.params["ref"]
        argument = req.params["argument"]
        ref_type = ref.get("type")
        key = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
        if ref_type == "ref/prompt" and self.registry.get_prompt(str(key)) is None:
            raise InvalidParams(f"Unknown prompt: {key}")
        context = req.params.get("context") or {}
        completer = self.registry.completer(str(ref_type), str(key), str(argument["name"]))
        values: list[str] = []
        if completer is not None:
            values = await completer(str(argument.get("value", "")), dict(context.get("arguments") or {}))
        return {"completion": {"values": values[:100], "total": len(values), "hasMore": len(values) > 100}}

    # -- change notifications ---------------------------------------------------------------
    def _listen(self, req: Request) -> Listen:
        wanted = dict(req.params.get("notifications") or {})
        honoured: dict[str, Any] = {}
        for key in ("toolsListChanged", "promptsListChanged", "resourcesListChanged"):
            if wanted.get(key) is True:
                honoured[key] = True
        uris = wanted.get("resourceSubscriptions")
        if isinstance(uris, list) and uris:
            honoured["resourceSubscriptions"] = [str(u) for u in uris]
        task_ids = wanted.get("taskIds")
        if isinstance(task_ids, list) and task_ids and self.tasks is not None:
            self._require_tasks_extension(req, "task notifications are part of the tasks extension")
            honoured["taskIds"] = [str(t) for t in task_ids]
        sub_id = req.id
        ack = jsonrpc.notification(
            "notifications/subscriptions/acknowledged",
            {"notifications": honoured, "_meta": {SUBSCRIPTION_ID_META_KEY: sub_id}},
        )
        return Listen(request_id=sub_id, subscription_id=str(sub_id), notifications=honoured, acknowledgement=ack)

    def attach_listener(self, listen: Listen, deliver: Callable[[dict[str, Any] | None], None]) -> Callable[[], None]:
        """Register a modern listen stream; returns the function that detaches it."""
        self._next_listener += 1
        key = self._next_listener
        self.listeners[key] = (listen, deliver)

        def detach() -> None:
            self.listeners.pop(key, None)

        return detach

    def _registry_changed(self, kind: str) -> None:
        method = f"notifications/{kind}/list_changed"
        flag = f"{kind}ListChanged"
        for listen, deliver in list(self.listeners.values()):
            if listen.notifications.get(flag):
                deliver(jsonrpc.notification(method, {"_meta": {SUBSCRIPTION_ID_META_KEY: listen.request_id}}))
        for session in self.sessions.sessions():
            session.open_stream("get").push(jsonrpc.notification(method))

    def resource_updated(self, uri: str) -> None:
        for listen, deliver in list(self.listeners.values()):
            if uri in listen.notifications.get("resourceSubscriptions", ()):
                deliver(
                    jsonrpc.notification(
                        "notifications/resources/updated",
                        {"uri": uri, "_meta": {SUBSCRIPTION_ID_META_KEY: listen.request_id}},
                    )
                )
        for session in self.sessions.sessions():
            if uri in session.subscriptions:
                session.open_stream("get").push(jsonrpc.notification("notifications/resources/updated", {"uri": uri}))

    def close_listeners(self) -> None:
        """End every listen stream gracefully (shutdown): the listen request's completion result, then
        the end of the stream. A stream that ends without that result was cut, and the client may
        reconnect."""
        for listen, deliver in list(self.listeners.values()):
            deliver(jsonrpc.result_response(listen.request_id, {"resultType": "complete", "_meta": {
                SERVER_INFO_META_KEY: self.server_info(), SUBSCRIPTION_ID_META_KEY: listen.request_id}}))
            deliver(None)
        self.listeners.clear()
