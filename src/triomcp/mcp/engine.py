"""The sans-I/O MCP engine: one HTTP request in, one instruction for the transport out.

It serves both protocol eras on one endpoint:

- modern (2026-07-28): stateless, every request self-contained (``_meta``
  carries the protocol version and client capabilities), routing headers
  checked against the body;
- legacy (2024-11-05 .. 2025-11-25): ``initialize`` handshake, sessions,
  a GET stream, resumable SSE, ``notifications/cancelled``.

The engine never does I/O and imports no async library: handlers are plain
coroutines awaited by the transport that owns the event loop. Method logic
lives in :mod:`triomcp.mcp.methods`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types import methods as spec

from triomcp.errors import (
    HeaderMismatch,
    HttpError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ProtocolError,
    SessionRequired,
    UnsupportedVersion,
)
from triomcp.mcp import jsonrpc
from triomcp.mcp.headers import decode_header_value
from triomcp.mcp.jsonrpc import Kind, Message
from triomcp.mcp.methods import Methods, Request
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.registry import Registry
from triomcp.mcp.request_state import RequestStateSigner
from triomcp.mcp.session import SessionStore
from triomcp.mcp.versions import (
    DEFAULT_LEGACY_VERSION,
    LEGACY_VERSIONS,
    MODERN_VERSIONS,
    SUPPORTED_VERSIONS,
    Era,
)

__all__ = ["Engine", "EngineConfig", "EngineStatistics"]

NAME_HEADER_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
                     "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}
"""Methods whose ``Mcp-Name`` header mirrors a param."""

JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class EngineConfig:
    server_name: str = "triomcp"
    server_version: str = "0"
    instructions: str | None = None
    session_idle_timeout: float = 1800.0
    max_sessions: int = 10_000
    replay_buffer_events: int = 256
    page_size: int = 100
    list_ttl_ms: int = 0
    request_state_key: bytes | None = None


@dataclass(frozen=True)
class EngineStatistics:
    open_sessions: int
    inflight_calls: int
    listeners: int
    eras: tuple[str, ...] = field(default=("legacy", "modern"))


def _media_types(value: str) -> list[str]:
    return [part.split(";", 1)[0].strip().lower() for part in value.split(",") if part.strip()]


def _accepts(accept: str, wanted: str) -> bool:
    if not accept:
        return True
    major = wanted.split("/", 1)[0]
    return any(t in (wanted, f"{major}/*", "*/*") for t in _media_types(accept))


class Engine:
    """Holds the registry, the legacy sessions and the modern listeners of one server."""

    def __init__(
        self,
        registry: Registry,
        config: EngineConfig | None = None,
        *,
        app_state: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EngineConfig()
        self.registry = registry
        self.clock = clock
        self.sessions = SessionStore(
            idle_timeout=self.config.session_idle_timeout,
            max_sessions=self.config.max_sessions,
            replay_limit=self.config.replay_buffer_events,
        )
        self.methods = Methods(
            registry=registry,
            sessions=self.sessions,
            config=self.config,
            signer=RequestStateSigner(self.config.request_state_key),
            app_state=app_state,
            wall_clock=wall_clock,
        )

    # -- transport entry points ---------------------------------------------------
    def handle(self, req: HttpRequest) -> Reply | Call | StreamGrant | Listen:
        """Decide what one HTTP request to the MCP endpoint gets."""
        try:
            if req.method == "POST":
                return self._post(req)
            if req.method == "GET":
                return self._get(req)
            if req.method == "DELETE":
                return self._delete(req)
            raise HttpError(405, f"Method Not Allowed: {req.method}", headers={"Allow": "GET, POST, DELETE"})
        except ProtocolError as err:
            return self.error_reply(err)

    def handle_frame(self, obj: Any, *, principal: str | None, executing_task: bool = False) -> Call | Reply | Listen:
        """One decoded modern-era JSON-RPC message from a non-HTTP transport (libp2p, a task worker).

        ``executing_task``: a worker runs a task's own ``tools/call`` (in-process only; never set
        from anything a peer or client sends)."""
        try:
            msg = jsonrpc.classify(obj)
            if msg.kind is not Kind.REQUEST:
                return Reply(202)
            return self._modern(msg, {}, principal=principal, accepts_sse=True, check_headers=False,
                                executing_task=executing_task)
        except ProtocolError as err:
            ident = obj.get("id") if isinstance(obj, dict) else None
            return self.error_reply(err, ident if isinstance(ident, (str, int)) else None)

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            open_sessions=len(self.sessions),
            inflight_calls=self.methods.inflight,
            listeners=len(self.methods.listeners),
        )

    def error_reply(self, err: ProtocolError, ident: str | int | None = None) -> Reply:
        headers = dict(err.headers) if isinstance(err, HttpError) else {}
        return Reply(err.http_status, jsonrpc.error_response(ident, err), headers)

    # -- POST ------------------------------------------------------------------------
    def _post(self, req: HttpRequest) -> Reply | Call | Listen:
        headers = req.headers
        ctype = headers.get("content-type", "")
        if "application/json" not in _media_types(ctype):
            raise HttpError(415, "Unsupported Media Type: Content-Type must be application/json")
        accept = headers.get("accept", "")
        if not _accepts(accept, "application/json"):
            raise HttpError(406, "Not Acceptable: Accept must allow application/json and text/event-stream")
        accepts_sse = _accepts(accept, "text/event-stream") and bool(accept)
        obj = jsonrpc.decode(req.body)
        version_header = headers.get("mcp-protocol-version")
        if isinstance(obj, list):
            return self._batch(obj, req, accepts_sse)
        msg = jsonrpc.classify(obj)
        meta_version = self._meta_version(msg)
        if msg.method == "initialize" and msg.kind is Kind.REQUEST and version_header not in MODERN_VERSIONS:
            return self.methods.initialize(msg, principal=req.principal, now=self.clock())
        if version_header in MODERN_VERSIONS or (meta_version is not None and "mcp-session-id" not in headers):
            if msg.kind is not Kind.REQUEST:
                # Modern clients cancel by closing the stream; other notifications carry nothing for us.
                return self._modern_notification(msg, version_header, meta_version)
            return self._modern(
                msg, headers, principal=req.principal, accepts_sse=accepts_sse, check_headers=True, auth=req.auth
            )
        if version_header is not None and version_header not in LEGACY_VERSIONS:
            raise UnsupportedVersion(
                f"Unsupported protocol version: {version_header}",
                data={"supported": list(SUPPORTED_VERSIONS), "requested": version_header},
            )
        return self._legacy(msg, req, accepts_sse)

    @staticmethod
    def _meta_version(msg: Message) -> str | None:
        meta = msg.params.get("_meta")
        if isinstance(meta, dict):
            value = meta.get(PROTOCOL_VERSION_META_KEY)
            return value if isinstance(value, str) else None
        return None

    def _batch(self, items: list[Any], req: HttpRequest, accepts_sse: bool) -> Reply:
        version = req.headers.get("mcp-protocol-version", DEFAULT_LEGACY_VERSION)
        if version != "2025-03-26" or not items:
            raise InvalidRequest(
                "Invalid Request: JSON-RPC batches are not supported by this protocol version "
                "(only 2025-03-26 allowed them)"
            )
        if "mcp-session-id" not in req.headers:
            raise SessionRequired("Bad Request: Mcp-Session-Id header is required")
        responses: list[Any] = []
        for item in items:
            try:
                msg = jsonrpc.classify(item)
                if msg.kind is Kind.REQUEST and msg.method == "initialize":
                    raise InvalidRequest("Invalid Request: initialize cannot be part of a batch")
                outcome = self._legacy(msg, req, accepts_sse=False, in_batch=True)
            except ProtocolError as err:
                ident = item.get("id") if isinstance(item, dict) else None
                responses.append(jsonrpc.error_response(ident if isinstance(ident, (str, int)) else None, err))
                continue
            if isinstance(outcome, Reply) and outcome.body is not None:
                responses.append(outcome.body)
            elif isinstance(outcome, Call):
                raise InvalidRequest(
                    "Invalid Request: batches may only hold requests answered at once (not tool calls)"
                )
        return Reply(200 if responses else 202, responses or None)

    # -- modern era -----------------------------------------------------------------
    def _modern_notification(self, msg: Message, version_header: str | None, meta_version: str | None) -> Reply:
        if meta_version is not None and version_header is not None:
            self._check_version_header(version_header, meta_version)
        if version_header is not None and version_header not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(
                f"Unsupported protocol version: {version_header}",
                data={"supported": list(SUPPORTED_VERSIONS), "requested": version_header},
            )
        if msg.kind is Kind.NOTIFICATION:
            return Reply(202)
        raise InvalidRequest("Invalid Request: modern-era clients must not POST JSON-RPC responses")

    def _modern(
        self,
        msg: Message,
        headers: Mapping[str, str],
        *,
        principal: str | None,
        accepts_sse: bool,
        check_headers: bool,
        auth: Any = None,
        executing_task: bool = False,
    ) -> Call | Reply | Listen:
        ident = msg.id
        assert ident is not None
        try:
            meta = msg.params.get("_meta")
            if not isinstance(meta, dict) or not isinstance(meta.get(PROTOCOL_VERSION_META_KEY), str):
                raise InvalidParams(f"params._meta must carry {PROTOCOL_VERSION_META_KEY!r}")
            version = meta[PROTOCOL_VERSION_META_KEY]
            if check_headers:
                # Header and body disagreeing is -32020 even when one of them names a version we do not
                # serve; -32022 is for a version both agree on (or the only one given).
                self._check_version_header(headers.get("mcp-protocol-version"), version)
            if version not in MODERN_VERSIONS:
                raise UnsupportedVersion(
                    f"Unsupported protocol version: {version}",
                    data={"supported": list(SUPPORTED_VERSIONS), "requested": version},
                )
            caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
            if not isinstance(caps, dict):
                raise InvalidParams(f"params._meta must carry {CLIENT_CAPABILITIES_META_KEY!r} (an object)")
            if check_headers:
                self._check_routing_headers(msg, headers)
            if (msg.method, version) not in spec.CLIENT_REQUESTS and msg.method not in self.methods.extra_modern:
                raise MethodNotFound(f"Method not found: {msg.method}")
            request = Request(
                era=Era.MODERN,
                version=version,
                message=msg,
                principal=principal,
                session=None,
                client_capabilities=caps,
                headers=dict(headers),
                auth=auth,
                executing_task=executing_task,
            )
            return self.methods.dispatch(request, accepts_sse=accepts_sse)
        except ProtocolError as err:
            return self.error_reply(err, ident)

    @staticmethod
    def _check_version_header(header_version: str | None, version: str) -> None:
        if header_version != version:
            raise HeaderMismatch(
                f"MCP-Protocol-Version header ({header_version!r}) does not match params._meta ({version!r})"
            )

    @staticmethod
    def _check_routing_headers(msg: Message, headers: Mapping[str, str]) -> None:
        method_header = headers.get("mcp-method")
        if method_header is None or decode_header_value(method_header) != msg.method:
            raise HeaderMismatch(f"Mcp-Method header ({method_header!r}) does not match method {msg.method!r}")
        param = NAME_HEADER_PARAM.get(msg.method)
        if param is not None:
            name_header = headers.get("mcp-name")
            expected = msg.params.get(param)
            if name_header is None or decode_header_value(name_header) != expected:
                raise HeaderMismatch(f"Mcp-Name header ({name_header!r}) does not match params.{param}")

    # -- legacy era ------------------------------------------------------------------
    def _legacy(
        self, msg: Message, req: HttpRequest, accepts_sse: bool, *, in_batch: bool = False
    ) -> Reply | Call:
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise SessionRequired(
                "Bad Request: Mcp-Session-Id header is required (or send a 2026-07-28 request "
                "with MCP-Protocol-Version and params._meta)"
            )
        session = self.sessions.get(sid, principal=req.principal, now=self.clock())
        header_version = req.headers.get("mcp-protocol-version")
        if header_version is not None and header_version != session.protocol_version:
            raise InvalidRequest(
                f"Bad Request: MCP-Protocol-Version {header_version} differs from the session's "
                f"negotiated {session.protocol_version}"
            )
        if msg.kind is Kind.NOTIFICATION:
            self.methods.legacy_notification(session, msg)
            return Reply(202)
        if msg.kind in (Kind.RESULT, Kind.ERROR):
            self.methods.legacy_response(session, msg)
            return Reply(202)
        session.fire("request")
        request = Request(
            era=Era.LEGACY,
            version=session.protocol_version,
            message=msg,
            principal=req.principal,
            session=session,
            client_capabilities=session.client_capabilities,
            headers=req.headers,
            auth=req.auth,
        )
        try:
            return self.methods.dispatch(request, accepts_sse=accepts_sse and not in_batch)
        except HttpError:
            raise  # an HTTP-level refusal (e.g. 403 insufficient_scope) keeps its status
        except ProtocolError as err:
            return Reply(200, jsonrpc.error_response(msg.id, err))

    @staticmethod
    def _refuse_modern(req: HttpRequest) -> None:
        """GET and DELETE do not exist in the modern era: 405, whatever ``Mcp-Session-Id`` says."""
        if req.headers.get("mcp-protocol-version") in MODERN_VERSIONS:
            raise HttpError(
                405, f"Method Not Allowed: {req.method} is not part of protocol "
                f"{req.headers['mcp-protocol-version']} (POST only)", headers={"Allow": "POST"},
            )

    def _get(self, req: HttpRequest) -> StreamGrant:
        self._refuse_modern(req)
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise HttpError(
                405, "Method Not Allowed: GET opens a legacy session stream; send Mcp-Session-Id",
                headers={"Allow": "POST"},
            )
        if not _accepts(req.headers.get("accept", ""), "text/event-stream") or not req.headers.get("accept"):
            raise HttpError(406, "Not Acceptable: GET requires Accept: text/event-stream")
        session = self.sessions.get(sid, principal=req.principal, now=self.clock())
        last = req.headers.get("last-event-id")
        if last:
            found = session.find_event(last)
            if found is None:
                raise InvalidRequest(f"Bad Request: Last-Event-ID {last!r} names no stream of this session")
            stream, seq = found
            if stream.listener is not None:
                raise HttpError(409, "Conflict: that stream is already being delivered on another connection")
            return StreamGrant(session, stream, stream.after(seq))
        stream = session.open_stream("get")
        if stream.listener is not None:
            raise HttpError(409, "Conflict: only one GET stream per session is allowed")
        return StreamGrant(session, stream, stream.undelivered())

    def _delete(self, req: HttpRequest) -> Reply:
        self._refuse_modern(req)
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise HttpError(405, "Method Not Allowed: DELETE ends a legacy session; send Mcp-Session-Id",
                            headers={"Allow": "POST"})
        self.sessions.delete(sid, principal=req.principal, now=self.clock())
        return Reply(200)

    # -- server-initiated notifications ----------------------------------------------
    def notify_resource_updated(self, uri: str) -> None:
        """Tell subscribers (legacy sessions and modern listeners) that a resource changed."""
        self.methods.resource_updated(uri)

    def expire_sessions(self) -> int:
        return len(self.sessions.expire_idle(self.clock()))
