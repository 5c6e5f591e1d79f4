"""Legacy-era sessions: the lifecycle table, the session store and SSE replay buffers.

Everything that affects a session's lifecycle lives in :data:`TRANSITIONS`::

    (state, event)                           -> new state
    (AWAITING_INITIALIZED, "initialized")    -> READY
    (AWAITING_INITIALIZED, "request")        -> AWAITING_INITIALIZED
    (READY, "request")                       -> READY
    (any open state, "delete" | "expire")    -> CLOSED

A CLOSED session answers 404 forever after (the client re-initializes).

Resumability: each SSE stream of a session (the GET stream, and each POST
answered with SSE) gets a stream id; its events carry ids ``<stream>.<seq>``,
unique per session and stream. The last ``replay_limit`` events of each stream
are kept, so a ``Last-Event-ID`` can only ever replay events of that session's
own stream.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from triomcp._owner import tagged
from triomcp.errors import InvalidRequest, Overloaded, SessionNotFound

__all__ = ["TRANSITIONS", "ReplayStream", "Session", "SessionState", "SessionStore", "SseEvent"]


class SessionState(StrEnum):
    AWAITING_INITIALIZED = "awaiting_initialized"
    READY = "ready"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.AWAITING_INITIALIZED, "initialized"): SessionState.READY,
    (SessionState.AWAITING_INITIALIZED, "request"): SessionState.AWAITING_INITIALIZED,
    (SessionState.READY, "request"): SessionState.READY,
    (SessionState.READY, "initialized"): SessionState.READY,
    (SessionState.AWAITING_INITIALIZED, "delete"): SessionState.CLOSED,
    (SessionState.READY, "delete"): SessionState.CLOSED,
    (SessionState.AWAITING_INITIALIZED, "expire"): SessionState.CLOSED,
    (SessionState.READY, "expire"): SessionState.CLOSED,
}


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event; ``data`` is ``None`` for a priming event."""

    id: str
    data: dict[str, Any] | None


class ReplayStream:
    """One SSE stream of a session: numbered events, a bounded replay buffer, a live listener."""

    def __init__(self, stream_id: str, limit: int) -> None:
        self.stream_id = stream_id
        self._seq = 0
        self._buffer: deque[tuple[int, SseEvent]] = deque(maxlen=limit)
        self.listener: Callable[[SseEvent | None], None] | None = None
        """Called with each new event, and with None when the stream ends."""
        self.delivered = 0
        """Sequence of the last event handed to a live listener."""
        self.finished = False
        """True once the response (or the end of the GET stream) has been pushed."""

    def push(self, data: dict[str, Any] | None) -> SseEvent:
        self._seq += 1
        event = SseEvent(f"{self.stream_id}.{self._seq}", data)
        self._buffer.append((self._seq, event))
        if self.listener is not None:
            self.delivered = self._seq
            self.listener(event)
        return event

    def undelivered(self) -> list[SseEvent]:
        """Events pushed while no connection was listening (for a fresh GET)."""
        return self.after(self.delivered)

    def after(self, seq: int) -> list[SseEvent]:
        """Events after ``seq`` still in the buffer (oldest first)."""
        return [event for s, event in self._buffer if s > seq]


@dataclass
class Session:
    id: str
    principal: str | None
    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any]
    created: float
    last_seen: float
    replay_limit: int
    state: SessionState = SessionState.AWAITING_INITIALIZED
    log_level: str | None = "info"
    subscriptions: set[str] = field(default_factory=set)
    inflight: dict[str | int, Callable[[], None]] = field(default_factory=dict)
    """Request id -> cancel callback set by the transport."""
    cancelled: set[str | int] = field(default_factory=set)
    """Request ids cancelled by ``notifications/cancelled``: their responses are never sent."""
    pending: dict[str | int, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    """Server-to-client request id -> resolver of the client's answer."""
    streams: dict[str, ReplayStream] = field(default_factory=dict)
    _next_stream: int = 0
    _stream_prefix: str = field(default_factory=lambda: secrets.token_hex(4))
    """Makes stream (and so event) ids unique across sessions, not only within one."""
    _next_request: int = 0

    def fire(self, event: str) -> SessionState:
        """Apply a lifecycle event; raises SessionNotFound on a closed session."""
        key = (self.state, event)
        if key not in TRANSITIONS:
            if self.state is SessionState.CLOSED:
                raise SessionNotFound("Session not found: it has ended")
            raise InvalidRequest(f"event {event!r} is not allowed in session state {self.state.value}")
        self.state = TRANSITIONS[key]
        return self.state

    def open_stream(self, stream_id: str | None = None) -> ReplayStream:
        if stream_id is None:
            self._next_stream += 1
            stream_id = f"{self._stream_prefix}{self._next_stream}"
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = ReplayStream(stream_id, self.replay_limit)
            self.streams[stream_id] = stream
            # Bound the number of finished streams kept for replay.
            finished = [sid for sid, s in self.streams.items() if s.finished]
            for sid in finished[: max(0, len(finished) - 64)]:
                del self.streams[sid]
        return stream

    def find_event(self, last_event_id: str) -> tuple[ReplayStream, int] | None:
        """The stream and sequence a ``Last-Event-ID`` names, if it is one of ours."""
        stream_id, sep, seq = last_event_id.rpartition(".")
        if not sep or not seq.isdigit() or stream_id not in self.streams:
            return None
        return self.streams[stream_id], int(seq)

    def next_request_id(self) -> str:
        self._next_request += 1
        return f"srv-{self._next_request}"


class SessionStore:
    """All legacy sessions of this process. Time is passed in (sans-I/O)."""

    def __init__(self, *, idle_timeout: float, max_sessions: int, replay_limit: int, owner_tag: str = "") -> None:
        self.idle_timeout = idle_timeout
        self.owner_tag = owner_tag
        """Put in front of every session id (:mod:`triomcp._owner`): a mesh finds the node holding it."""
        self.max_sessions = max_sessions
        self.replay_limit = replay_limit
        self._sessions: dict[str, Session] = {}
        self.on_close: list[Callable[[Session], None]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self,
        *,
        principal: str | None,
        protocol_version: str,
        client_capabilities: dict[str, Any],
        client_info: dict[str, Any],
        now: float,
    ) -> Session:
        self.expire_idle(now)
        if len(self._sessions) >= self.max_sessions:
            raise Overloaded(f"too many sessions (limit {self.max_sessions}); try again later")
        sid = tagged(self.owner_tag, secrets.token_urlsafe(32))  # 256 random bits, visible ASCII only
        session = Session(
            id=sid,
            principal=principal,
            protocol_version=protocol_version,
            client_capabilities=client_capabilities,
            client_info=client_info,
            created=now,
            last_seen=now,
            replay_limit=self.replay_limit,
        )
        self._sessions[sid] = session
        return session

    def get(self, sid: str, *, principal: str | None, now: float) -> Session:
        """The live session, or SessionNotFound (also for another principal's session)."""
        session = self._sessions.get(sid)
        if session is None or session.principal != principal:
            raise SessionNotFound("Session not found")
        if now - session.last_seen > self.idle_timeout and not session.inflight:
            self._close(session, "expire")
            raise SessionNotFound("Session not found: it expired")
        session.last_seen = now
        return session

    def peek(self, sid: str) -> Session | None:
        """The session with this id if it is open (server-initiated messages; no principal check)."""
        return self._sessions.get(sid)

    def delete(self, sid: str, *, principal: str | None, now: float) -> Session:
        session = self.get(sid, principal=principal, now=now)
        self._close(session, "delete")
        return session

    def expire_idle(self, now: float) -> list[Session]:
        expired = [
            s for s in self._sessions.values() if now - s.last_seen > self.idle_timeout and not s.inflight
        ]
        for session in expired:
            self._close(session, "expire")
        return expired

    def close_all(self) -> None:
        for session in list(self._sessions.values()):
            self._close(session, "delete")

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def _close(self, session: Session, event: str) -> None:
        session.fire(event)
        self._sessions.pop(session.id, None)
        for cancel in list(session.inflight.values()):
            cancel()
        for stream in session.streams.values():
            stream.finished = True
            if stream.listener is not None:
                stream.listener(None)
        for hook in self.on_close:
            hook(session)
