"""What a tool, resource or prompt handler gets to talk back to its client.

The same :class:`ToolContext` works in both eras; the engine picks the wire
mechanism:

- progress: ``notifications/progress`` on the request's stream, when the
  request carried ``_meta.progressToken``; values must increase (enforced).
- logging: ``notifications/message``; legacy sessions filter by the level set
  with ``logging/setLevel``; modern requests log only when their ``_meta``
  carried a ``logLevel``.
- asking the client for input (elicitation, sampling, roots): legacy sends a
  server-to-client request on the request's SSE stream and waits for the
  answer; modern ends the call with an ``input_required`` result carrying an
  integrity-protected ``requestState`` and re-runs the handler when the client
  retries with ``inputResponses`` (handlers must therefore ask before acting).
  :meth:`ToolContext.ask` asks several things at once (one round for all).
  Inside an MCP task the same call parks the task (``input_required``) until
  ``tasks/update`` answers, then the handler runs again with every answer.
- becoming a task: a tool registered with ``task_start="handler"`` runs inline
  (asking for input over MRTR if it needs to) until it awaits
  :meth:`ToolContext.run_as_task`; from there it is a durable task.
- cancellation: the transport cancels the handler's task; handlers just use
  ``try/finally`` for clean-up.

The transport supplies an :class:`Outbound`; the engine never touches I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from triomcp.errors import InvalidParams, MissingCapability, ToolError
from triomcp.mcp.versions import Era

__all__ = ["LOG_LEVELS", "BecomeTask", "InputRequired", "Outbound", "ToolContext", "input_capability"]

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class Outbound(Protocol):
    """The transport's side of one in-flight request."""

    async def send(self, message: dict[str, Any]) -> None:
        """Send a related notification on the request's stream (may upgrade JSON to SSE)."""

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a server-to-client request related to this call and wait for its result.

        Raises ToolError when the transport has no back channel.
        """

    async def close_stream(self) -> None:
        """End the request's response stream early while the call goes on, where the transport can
        (legacy SSE polling: the client resumes with ``Last-Event-ID``); otherwise do nothing."""


INPUT_CAPABILITIES = {"elicitation/create": "elicitation", "sampling/createMessage": "sampling",
                      "roots/list": "roots"}
"""The client capability each kind of input request needs."""


def input_capability(method: str) -> str:
    try:
        return INPUT_CAPABILITIES[method]
    except KeyError:
        raise ValueError(f"{method!r} is not a server-to-client request a handler may make") from None


class InputRequired(Exception):
    """Raised inside a modern-era handler that needs client input it has not got yet.

    ``requests``: every input request of this round that has no answer yet, by key;
    ``answers``: the answers the handler used before it stopped (carried to the next round)."""

    def __init__(self, requests: dict[str, dict[str, Any]], answers: dict[str, Any]) -> None:
        super().__init__(", ".join(requests))
        self.requests = requests
        self.answers = answers


class BecomeTask(Exception):
    """Raised by :meth:`ToolContext.run_as_task` when the call is to continue as a durable task.

    ``answers``: the input gathered so far, handed to the task so its run sees the same answers."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__("the call continues as a task")
        self.answers = answers


class ToolContext:
    """Per-call facilities for handlers; one instance per request."""

    def __init__(
        self,
        *,
        era: Era,
        protocol_version: str,
        request_id: str | int,
        principal: str | None,
        client_capabilities: Mapping[str, Any],
        outbound: Outbound,
        progress_token: str | int | None,
        log_level: str | None,
        input_responses: Mapping[str, Any] | None,
        session_id: str | None,
        app_state: Any,
        may_become_task: bool = False,
        request_state_verified: bool = False,
        http_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.era = era
        self.http_headers = http_headers
        """The headers (lower-case names) of the HTTP request the call came in; None when it did not
        come over HTTP (a peer's call over MCP over libp2p, a task's run)."""
        self.protocol_version = protocol_version
        self.request_id = request_id
        self.principal = principal
        self.client_capabilities = client_capabilities
        self.session_id = session_id
        self.app_state = app_state
        """Whatever the server put there: the node, the queue, settings."""
        self._outbound = outbound
        self._progress_token = progress_token
        self._last_progress: float | None = None
        self._log_level = log_level
        self._input_responses = dict(input_responses or {})
        self._asks = 0
        self._answers: dict[str, Any] = {}
        self.may_become_task = may_become_task
        """The handler may turn the call into a task (:meth:`run_as_task`); set by the engine."""
        self.request_state_verified = request_state_verified
        """A valid ``requestState`` of an earlier round came with this request (modern era)."""

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send ``notifications/progress``; ignored when the client asked for none.

        ``progress`` must increase from one call to the next (spec rule).
        """
        if self._progress_token is None:
            return
        if self._last_progress is not None and progress <= self._last_progress:
            raise ValueError(f"progress must increase: {progress} after {self._last_progress}")
        self._last_progress = progress
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._outbound.send({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def close_stream(self) -> None:
        """Let the client go while this call goes on (legacy 2025-11-25 SSE polling): the response
        stream ends now, and the client resumes it, events and result, with ``GET`` and
        ``Last-Event-ID`` after the priming event's ``retry``. Nothing happens where a transport
        cannot do this (JSON-only clients, older versions, the modern era, libp2p, tasks)."""
        await self._outbound.close_stream()

    def wants_log(self, level: str) -> bool:
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        if self._log_level is None:
            return False
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self._log_level)

    async def log(self, level: str, data: Any, *, logger: str | None = None) -> None:
        """Send ``notifications/message`` when the client's level lets it through."""
        if not self.wants_log(level):
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self._outbound.send({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    # -- asking the client -------------------------------------------------------------
    @staticmethod
    def elicitation(message: str, requested_schema: dict[str, Any]) -> dict[str, Any]:
        """An ``elicitation/create`` request (form mode) for :meth:`ask`."""
        return {"method": "elicitation/create",
                "params": {"mode": "form", "message": message, "requestedSchema": requested_schema}}

    @staticmethod
    def sampling(messages: list[dict[str, Any]], *, max_tokens: int, **extra: Any) -> dict[str, Any]:
        """A ``sampling/createMessage`` request for :meth:`ask`."""
        return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens, **extra}}

    @staticmethod
    def roots() -> dict[str, Any]:
        """A ``roots/list`` request for :meth:`ask`."""
        return {"method": "roots/list", "params": {}}

    async def elicit(self, message: str, requested_schema: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        """Ask the user for structured input; returns the ElicitResult (``action``, ``content``)."""
        return (await self._ask_one(key, self.elicitation(message, requested_schema)))

    async def sample(self, messages: list[dict[str, Any]], *, max_tokens: int, key: str | None = None,
                     **extra: Any) -> dict[str, Any]:
        """Ask the client's model for a completion; returns the CreateMessageResult."""
        return await self._ask_one(key, self.sampling(messages, max_tokens=max_tokens, **extra))

    async def list_roots(self, *, key: str | None = None) -> dict[str, Any]:
        """Ask the client for its roots; returns the ListRootsResult."""
        return await self._ask_one(key, self.roots())

    async def ask(self, requests: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Ask for several things in one round; returns the answers by key.

        Keys name the requests across rounds (and, in a task, over its whole life): a key that was
        answered once keeps that answer. Each request is ``{"method", "params"}`` (see
        :meth:`elicitation`, :meth:`sampling`, :meth:`roots`); each needs its client capability.
        """
        for request in requests.values():
            self._require(input_capability(str(request.get("method"))))
        if self.era is Era.LEGACY:
            out = {}
            for key, request in requests.items():
                params = dict(request.get("params") or {})
                if request.get("method") == "elicitation/create" and self.protocol_version < "2025-11-25":
                    params.pop("mode", None)
                out[key] = self._answers[key] = await self._outbound.request(str(request["method"]), params)
            return out
        missing = {key: dict(request) for key, request in requests.items() if key not in self._input_responses}
        if missing:
            raise InputRequired(missing, dict(self._answers))
        out = {}
        for key in requests:
            answer = self._input_responses[key]
            if not isinstance(answer, dict):
                raise InvalidParams(f"inputResponses[{key!r}] must be an object (the client's result)")
            out[key] = self._answers[key] = answer
        return out

    async def run_as_task(self) -> None:
        """Continue as a durable task from here (tools registered with ``task_start="handler"``).

        The call answers ``CreateTaskResult`` and the task runs the handler again from the start, with
        the answers gathered so far: so ask for input before this point, act after it. Returns at once
        (the call goes on inline) when the call cannot become a task (the client did not declare the
        tasks extension and the tool's task support is optional), and inside the task itself."""
        if self.may_become_task:
            raise BecomeTask(dict(self._answers))

    async def _ask_one(self, key: str | None, request: dict[str, Any]) -> dict[str, Any]:
        if key is None:
            key = f"input-{self._asks}"
            self._asks += 1
        return (await self.ask({key: request}))[key]

    def _require(self, capability: str) -> None:
        """Modern era: -32021 names the capability; legacy: the tool fails (isError)."""
        if capability in self.client_capabilities:
            return
        if self.era is Era.MODERN:
            raise MissingCapability(
                f"Missing client capability: {capability}", data={"requiredCapabilities": {capability: {}}}
            )
        raise ToolError(f"the client did not declare the {capability} capability", code="capability_missing")
