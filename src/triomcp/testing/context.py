"""Unit-test a handler directly: a :class:`ToolContext` built by hand, and an outbound that records.

::

    outbound = RecordingOutbound(elicitation=lambda params: {"action": "accept", "content": {"ok": True}})
    reading = await temperature(City(city="Oslo"), make_tool_context(outbound=outbound))
    assert [p["progress"] for p in outbound.progress] == [0.5, 1.0]

Nothing here needs an event loop of its own: the outbound never suspends, so a handler that awaits
nothing else can even be stepped synchronously.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from triomcp.errors import ToolError
from triomcp.mcp import LEGACY_VERSIONS, MODERN_VERSIONS, Era, ToolContext
from triomcp.mcp.context import Outbound
from triomcp.testing._answers import Answers, InputHandler

__all__ = ["ALL_CLIENT_CAPABILITIES", "RecordingOutbound", "make_tool_context"]

ALL_CLIENT_CAPABILITIES: Mapping[str, Any] = {"elicitation": {}, "sampling": {}, "roots": {}}
"""What :func:`make_tool_context` says the client can answer unless told otherwise."""


class RecordingOutbound:
    """An :class:`~triomcp.mcp.context.Outbound` that records what a handler sends and answers what it
    asks: first from ``answers`` (in order), then from the handlers (as :class:`McpTestClient` takes them).

    A request it cannot answer fails the way a transport without a back channel does
    (``ToolError``, code ``no_back_channel``): the tool's result says so."""

    def __init__(self, *, answers: Iterable[dict[str, Any]] | None = None, elicitation: InputHandler | None = None,
                 sampling: InputHandler | None = None, roots: Sequence[dict[str, Any]] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        """Every message the handler sent (notifications), in order."""
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """Every server-to-client request the handler made: ``(method, params)``."""
        self.answers = list(answers or [])
        self.closed = False
        """Whether the handler called ``ctx.close_stream()``."""
        self._answers = Answers(elicitation=elicitation, sampling=sampling, roots=roots)

    def of(self, method: str) -> list[dict[str, Any]]:
        """The params of every sent message of that method."""
        return [dict(m.get("params") or {}) for m in self.sent if m.get("method") == method]

    @property
    def progress(self) -> list[dict[str, Any]]:
        """The ``notifications/progress`` params: ``progress``, ``total``, ``message``."""
        return self.of("notifications/progress")

    @property
    def logs(self) -> list[dict[str, Any]]:
        """The ``notifications/message`` params: ``level``, ``data``, ``logger``."""
        return self.of("notifications/message")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.requests.append((method, params))
        if self.answers:
            return self.answers.pop(0)
        try:
            return await self._answers.answer(method, params)
        except LookupError as exc:
            raise ToolError(str(exc), code="no_back_channel") from None

    async def close_stream(self) -> None:
        self.closed = True


def make_tool_context(
    *,
    outbound: Outbound | None = None,
    era: Era | Literal["legacy", "modern"] = Era.LEGACY,
    protocol_version: str | None = None,
    request_id: str | int = 1,
    principal: str | None = None,
    client_capabilities: Mapping[str, Any] | None = None,
    progress_token: str | int | None = "progress-1",
    log_level: str | None = "debug",
    input_responses: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    app_state: Any = None,
    may_become_task: bool = False,
) -> ToolContext:
    """A :class:`ToolContext` for calling a handler directly; every argument overrides one default.

    The default is a legacy-era context in which everything a handler says or asks goes through
    ``outbound`` (a new :class:`RecordingOutbound` when not given): progress and logs (level
    ``debug``) are sent, and ``ctx.elicit``/``ctx.sample``/``ctx.list_roots`` are answered by it. The
    client declares elicitation, sampling and roots (``client_capabilities`` to declare less).
    ``era="modern"`` tests the input-required path: an ask raises
    :class:`~triomcp.mcp.context.InputRequired` unless ``input_responses`` (by key: ``input-0``,
    ``input-1``, ... or the handler's own) answers it. ``app_state`` is what the server would put
    there (a node's services, or a fake of them)."""
    era = Era(era)
    if protocol_version is None:
        protocol_version = LEGACY_VERSIONS[-1] if era is Era.LEGACY else MODERN_VERSIONS[-1]
    if session_id is None and era is Era.LEGACY:
        session_id = "test-session"
    return ToolContext(
        era=era,
        protocol_version=protocol_version,
        request_id=request_id,
        principal=principal,
        client_capabilities=dict(ALL_CLIENT_CAPABILITIES if client_capabilities is None else client_capabilities),
        outbound=outbound if outbound is not None else RecordingOutbound(),
        progress_token=progress_token,
        log_level=log_level,
        input_responses=input_responses,
        session_id=session_id,
        app_state=app_state,
        may_become_task=may_become_task,
    )
