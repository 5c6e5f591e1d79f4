"""The sans-I/O MCP engine: one HTTP request in, one instruction for the transport out.

It serves both protocol eras on one endpoint:

- modern (2026-07-28): stateless, every request self-contained (``_meta``
  carries the protocol version and client capabilities), routing headers
  checked against the body;
- legacy (2024-11-05 .. 2025-11-25): ``initialize`` handshake, sessions,
  a GET stream, resumable SSE, ``notifications/cancelled`` (:mod:`triomcp.mcp.legacy`).

The engine never does I/O and imports no async library: handlers are plain
coroutines awaited by the transport that owns the event loop. It is built with its
collaborators (:class:`~triomcp.mcp.config.EngineHooks`) and reached only through its own
methods. What each method does lives by feature area (:mod:`triomcp.mcp.dispatch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types import methods as spec

from triomcp.errors import HttpError, InvalidParams, InvalidRequest, MethodNotFound, ProtocolError
from triomcp.mcp import jsonrpc
from triomcp.mcp.config import EngineConfig, EngineHooks
from triomcp.mcp.core import Core, Request
from triomcp.mcp.dispatch import Dispatcher
from triomcp.mcp.jsonrpc import Kind, Message
from triomcp.mcp.legacy import LegacyHttp
from triomcp.mcp.listeners import Deliver
from triomcp.mcp.negotiation import (
    accepts,
    check_routing_headers,
    check_version_header,
    media_types,
    meta_version,
    unsupported_version,
)
from triomcp.mcp.outcomes import NOT_DECODED, Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.registry import Registry
from triomcp.mcp.routing import OwnerRoute, route
from triomcp.mcp.session import SessionStore
from triomcp.mcp.tasks import TaskRecord
from triomcp.mcp.versions import LEGACY_VERSIONS, MODERN_VERSIONS, SUPPORTED_VERSIONS, Era

__all__ = ["Engine", "EngineConfig", "EngineHooks", "EngineStatistics"]


@dataclass(frozen=True)
class EngineStatistics:
    open_sessions: int
    inflight_calls: int
    listeners: int
    eras: tuple[str, ...] = field(default=("legacy", "modern"))


class Engine:
    """Holds the registry, the legacy sessions and the modern listeners of one server."""

    def __init__(
        self,
        registry: Registry,
        config: EngineConfig | None = None,
        *,
        hooks: EngineHooks | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EngineConfig()
        self.registry = registry
        self.clock = clock
        self.sessions = SessionStore(idle_timeout=self.config.session_idle_timeout,
                                     max_sessions=self.config.max_sessions,
                                     replay_limit=self.config.replay_buffer_events,
                                     owner_tag=self.config.owner_tag)
        self._core = Core(registry=registry, sessions=self.sessions, config=self.config,
                          hooks=hooks or EngineHooks(), wall_clock=wall_clock)
        self._dispatch = Dispatcher(self._core)
        self._legacy = LegacyHttp(self.sessions, self._dispatch, clock)

    # -- transport entry points ---------------------------------------------------
    def handle(self, req: HttpRequest) -> Reply | Call | StreamGrant | Listen:
        """Decide what one HTTP request to the MCP endpoint gets."""
        try:
            if req.method == "POST":
                return self._post(req)
            if req.method == "GET":
                return self._legacy.get(req)
            if req.method == "DELETE":
                return self._legacy.delete(req)
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

    def route(self, req: HttpRequest) -> tuple[OwnerRoute | None, HttpRequest]:
        """The other node of the mesh holding the session, task or ``requestState`` ``req`` names
        (:mod:`triomcp.mcp.routing`; None: this node serves it), and ``req`` again, carrying its
        decoded body if deciding parsed it: hand that one to :meth:`handle`, which then does not
        parse the body a second time."""
        return route(req, own_tag=self.config.owner_tag, registry=self.registry)

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(open_sessions=len(self.sessions), inflight_calls=self._core.inflight,
                                listeners=len(self._dispatch.listeners))

    @staticmethod
    def error_reply(err: ProtocolError, ident: str | int | None = None) -> Reply:
        headers = dict(err.headers) if isinstance(err, HttpError) else {}
        return Reply(err.http_status, jsonrpc.error_response(ident, err), headers)

    # -- what the server tells the engine -------------------------------------------------
    def attach_listener(self, listen: Listen, deliver: Deliver) -> Callable[[], None]:
        """An open ``subscriptions/listen`` stream (the transport's ``deliver``); returns ``detach``."""
        return self._dispatch.listeners.attach(listen, deliver)

    def close_listeners(self) -> None:
        """Shutdown: answer every open listen request with its completion result, end the streams."""
        self._dispatch.listeners.close_all()

    def notify_resource_updated(self, uri: str) -> None:
        """Tell subscribers (legacy sessions and modern listeners) that a resource changed."""
        self._dispatch.listeners.resource_updated(uri)

    def task_changed(self, record: TaskRecord, session_id: str | None) -> None:
        """A task's status changed: notify the legacy session that created it and modern listeners."""
        self._dispatch.listeners.task_changed(record, session_id)

    def expire_sessions(self) -> int:
        return len(self.sessions.expire_idle(self.clock()))

    # -- POST ------------------------------------------------------------------------
    def _post(self, req: HttpRequest) -> Reply | Call | Listen:
        headers = req.headers
        if "application/json" not in media_types(headers.get("content-type", "")):
            raise HttpError(415, "Unsupported Media Type: Content-Type must be application/json")
        accept = headers.get("accept", "")
        if not accepts(accept, "application/json"):
            raise HttpError(406, "Not Acceptable: Accept must allow application/json and text/event-stream")
        accepts_sse = accepts(accept, "text/event-stream") and bool(accept)
        obj = jsonrpc.decode(req.body) if req.decoded is NOT_DECODED else req.decoded
        if isinstance(obj, list):
            return self._legacy.batch(obj, req)
        msg = jsonrpc.classify(obj)
        version_header = headers.get("mcp-protocol-version")
        in_meta = meta_version(msg)
        if msg.method == "initialize" and msg.kind is Kind.REQUEST and version_header not in MODERN_VERSIONS:
            return self._dispatch.lifecycle.initialize(msg, principal=req.principal, now=self.clock())
        if version_header in MODERN_VERSIONS or (in_meta is not None and "mcp-session-id" not in headers):
            if msg.kind is not Kind.REQUEST:
                # Modern clients cancel by closing the stream; other notifications carry nothing for us.
                return self._modern_notification(msg, version_header, in_meta)
            return self._modern(msg, headers, principal=req.principal, accepts_sse=accepts_sse, check_headers=True,
                                auth=req.auth)
        if version_header is not None and version_header not in LEGACY_VERSIONS:
            raise unsupported_version(version_header)
        return self._legacy.message(msg, req, accepts_sse)

    # -- modern era -----------------------------------------------------------------
    @staticmethod
    def _modern_notification(msg: Message, version_header: str | None, in_meta: str | None) -> Reply:
        if in_meta is not None and version_header is not None:
            check_version_header(version_header, in_meta)
        if version_header is not None and version_header not in SUPPORTED_VERSIONS:
            raise unsupported_version(version_header)
        if msg.kind is Kind.NOTIFICATION:
            return Reply(202)
        raise InvalidRequest("Invalid Request: modern-era clients must not POST JSON-RPC responses")

    def _modern(self, msg: Message, headers: Mapping[str, str], *, principal: str | None, accepts_sse: bool,
                check_headers: bool, auth: Any = None, executing_task: bool = False) -> Call | Reply | Listen:
        assert msg.id is not None
        try:
            meta = msg.params.get("_meta")
            if not isinstance(meta, dict) or not isinstance(meta.get(PROTOCOL_VERSION_META_KEY), str):
                raise InvalidParams(f"params._meta must carry {PROTOCOL_VERSION_META_KEY!r}")
            version = meta[PROTOCOL_VERSION_META_KEY]
            if check_headers:
                # Header and body disagreeing is -32020 even when one of them names a version we do not
                # serve; -32022 is for a version both agree on (or the only one given).
                check_version_header(headers.get("mcp-protocol-version"), version)
            if version not in MODERN_VERSIONS:
                raise unsupported_version(version)
            caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
            if not isinstance(caps, dict):
                raise InvalidParams(f"params._meta must carry {CLIENT_CAPABILITIES_META_KEY!r} (an object)")
            if check_headers:
                check_routing_headers(msg, headers)
            if (msg.method, version) not in spec.CLIENT_REQUESTS and not self._dispatch.is_extension(msg.method,
                                                                                                       Era.MODERN):
                raise MethodNotFound(f"Method not found: {msg.method}")
            request = Request(era=Era.MODERN, version=version, message=msg, principal=principal, session=None,
                              client_capabilities=caps, headers=dict(headers), auth=auth,
                              executing_task=executing_task)
            return self._dispatch.dispatch(request, accepts_sse=accepts_sse)
        except ProtocolError as err:
            return self.error_reply(err, msg.id)
