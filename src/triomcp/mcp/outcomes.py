"""What the engine tells a transport to do with one HTTP request (immutable where possible)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from triomcp.mcp.context import Outbound
from triomcp.mcp.session import ReplayStream, Session, SseEvent
from triomcp.mcp.versions import Era

__all__ = ["NOT_DECODED", "Call", "HttpRequest", "Listen", "Reply", "StreamGrant"]


class _NotDecoded:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_DECODED"


NOT_DECODED: Any = _NotDecoded()
"""``HttpRequest.decoded`` of a request whose body nobody has parsed yet (JSON ``null`` is ``None``)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request as the engine sees it. Header names are lower case."""

    method: str
    headers: dict[str, str]
    body: bytes = b""
    principal: str | None = None
    """Who is asking (authenticated by the server); sessions and tasks are bound to it."""
    auth: Any = None
    """The server's authentication record (scopes etc.), passed to ``Methods.tool_guard``."""
    decoded: Any = field(default=NOT_DECODED, compare=False, repr=False)
    """The body, already parsed (by routing, :func:`triomcp.mcp.routing.route`): the engine reads
    this instead of parsing ``body`` again."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer at once: a JSON body (or none) with this status."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Call:
    """A request whose handler must run; the transport awaits :meth:`run`.

    The transport answers JSON if the handler finishes before sending anything,
    and upgrades to SSE on the first notification or server-to-client request
    (when the client accepts SSE).
    """

    era: Era
    version: str
    request_id: str | int
    method: str
    accepts_sse: bool
    session: Session | None
    headers: dict[str, str]
    _runner: Callable[[Outbound], Awaitable[dict[str, Any] | None]]
    stream: ReplayStream | None = None
    tool: str | None = None
    """The tool a ``tools/call`` names (the transport's admission control exempts some)."""

    async def run(self, outbound: Outbound) -> dict[str, Any] | None:
        """The JSON-RPC response, or None when the client cancelled the request (send nothing)."""
        return await self._runner(outbound)

    def bind_cancel(self, cancel: Callable[[], None]) -> None:
        """Let ``notifications/cancelled`` (legacy) reach the transport's cancel scope."""
        if self.session is not None:
            self.session.inflight[self.request_id] = cancel

    def open_stream(self) -> ReplayStream:
        """Legacy: the session stream this call's SSE events are numbered on (for resumption)."""
        if self.stream is None:
            assert self.session is not None
            self.stream = self.session.open_stream()
        return self.stream

    def was_cancelled(self) -> bool:
        return self.session is not None and self.request_id in self.session.cancelled


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """Legacy GET: open an SSE stream (or resume one) for the session."""

    session: Session
    stream: ReplayStream
    replay: list[SseEvent]


@dataclass(frozen=True, slots=True)
class Listen:
    """Modern ``subscriptions/listen``: a long-lived SSE stream of filtered notifications."""

    request_id: str | int
    subscription_id: str
    notifications: dict[str, Any]
    """The filter the server agreed to honour."""
    acknowledgement: dict[str, Any]
    """The first message to send."""
