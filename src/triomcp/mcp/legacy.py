"""The legacy era over HTTP (2024-11-05 .. 2025-11-25): session-bound POSTs, batches, GET streams,
DELETE. The handshake itself is :meth:`triomcp.mcp.lifecycle.Lifecycle.initialize`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from triomcp.errors import HttpError, InvalidRequest, ProtocolError, SessionRequired
from triomcp.mcp import jsonrpc
from triomcp.mcp.core import Request
from triomcp.mcp.dispatch import Dispatcher
from triomcp.mcp.jsonrpc import Kind, Message
from triomcp.mcp.lifecycle import Lifecycle
from triomcp.mcp.negotiation import accepts, refuse_modern
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.session import SessionStore
from triomcp.mcp.versions import DEFAULT_LEGACY_VERSION, Era

__all__ = ["LegacyHttp"]

BATCH_VERSION = "2025-03-26"
"""The only version whose clients may send JSON-RPC batches."""


class LegacyHttp:
    def __init__(self, sessions: SessionStore, dispatcher: Dispatcher, clock: Callable[[], float]) -> None:
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.clock = clock

    def message(self, msg: Message, req: HttpRequest, accepts_sse: bool, *, in_batch: bool = False) -> Reply | Call:
        """One JSON-RPC message of an established session."""
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise SessionRequired("Bad Request: Mcp-Session-Id header is required (or send a 2026-07-28 request "
                                  "with MCP-Protocol-Version and params._meta)")
        session = self.sessions.get(sid, principal=req.principal, now=self.clock())
        header_version = req.headers.get("mcp-protocol-version")
        if header_version is not None and header_version != session.protocol_version:
            raise InvalidRequest(f"Bad Request: MCP-Protocol-Version {header_version} differs from the session's "
                                 f"negotiated {session.protocol_version}")
        if msg.kind is Kind.NOTIFICATION:
            Lifecycle.notification(session, msg)
            return Reply(202)
        if msg.kind in (Kind.RESULT, Kind.ERROR):
            Lifecycle.response(session, msg)
            return Reply(202)
        session.fire("request")
        request = Request(era=Era.LEGACY, version=session.protocol_version, message=msg, principal=req.principal,
                          session=session, client_capabilities=session.client_capabilities, headers=req.headers,
                          auth=req.auth)
        try:
            outcome = self.dispatcher.dispatch(request, accepts_sse=accepts_sse and not in_batch)
        except HttpError:
            raise  # an HTTP-level refusal (e.g. 403 insufficient_scope) keeps its status
        except ProtocolError as err:
            return Reply(200, jsonrpc.error_response(msg.id, err))
        assert not isinstance(outcome, Listen), outcome  # subscriptions/listen is modern only
        return outcome

    def batch(self, items: list[Any], req: HttpRequest) -> Reply:
        if req.headers.get("mcp-protocol-version", DEFAULT_LEGACY_VERSION) != BATCH_VERSION or not items:
            raise InvalidRequest("Invalid Request: JSON-RPC batches are not supported by this protocol version "
                                 f"(only {BATCH_VERSION} allowed them)")
        if "mcp-session-id" not in req.headers:
            raise SessionRequired("Bad Request: Mcp-Session-Id header is required")
        responses: list[Any] = []
        for item in items:
            try:
                msg = jsonrpc.classify(item)
                if msg.kind is Kind.REQUEST and msg.method == "initialize":
                    raise InvalidRequest("Invalid Request: initialize cannot be part of a batch")
                outcome = self.message(msg, req, accepts_sse=False, in_batch=True)
            except ProtocolError as err:
                ident = item.get("id") if isinstance(item, dict) else None
                responses.append(jsonrpc.error_response(ident if isinstance(ident, (str, int)) else None, err))
                continue
            if isinstance(outcome, Call):
                raise InvalidRequest("Invalid Request: batches may only hold requests answered at once (not tool calls)")
            if outcome.body is not None:
                responses.append(outcome.body)
        return Reply(200 if responses else 202, responses or None)

    def get(self, req: HttpRequest) -> StreamGrant:
        """Open the session's GET stream, or resume a stream after ``Last-Event-ID``."""
        refuse_modern(req.method, req.headers)
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise HttpError(405, "Method Not Allowed: GET opens a legacy session stream; send Mcp-Session-Id",
                            headers={"Allow": "POST"})
        if not req.headers.get("accept") or not accepts(req.headers["accept"], "text/event-stream"):
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

    def delete(self, req: HttpRequest) -> Reply:
        refuse_modern(req.method, req.headers)
        sid = req.headers.get("mcp-session-id")
        if sid is None:
            raise HttpError(405, "Method Not Allowed: DELETE ends a legacy session; send Mcp-Session-Id",
                            headers={"Allow": "POST"})
        self.sessions.delete(sid, principal=req.principal, now=self.clock())
        return Reply(200)
