"""What a tool, resource or prompt handler gets to talk back to its client.

The same :class:`ToolContext` works in both eras; the engine picks the wire
mechanism:

- progress: ``notifications/progress`` on the request's stream, when the
  request carried ``_meta.progressToken``; values must increase (enforced).
- logging: ``notifications/message``; legacy sessions filter by the level set
  with ``logging/setLevel``; modern requests log only when their ``_meta``
  carried a ``logLevel``.
- asking the client for input (elicitation, sampling): legacy sends a
  server-to-client request on the request's SSE stream and waits for the
  answer; modern ends the call with an ``input_required`` result carrying an
  integrity-protected ``requestState`` and re-runs the handler when the client
  retries with ``inputResponses`` (handlers must therefore ask before acting).
- cancellation: the transport cancels the handler's task; handlers just use
  ``try/finally`` for clean-up.

The transport supplies an :class:`Outbound`; the engine never touches I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from triomcp.errors import MissingCapability, ToolError
from triomcp.mcp.versions import Era

__all__ = ["LOG_LEVELS", "InputRequired", "Outbound", "ToolContext"]

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class Outbound(Protocol):
    """The transport's side of one in-flight request."""

    async def send(self, message: dict[str, Any]) -> None:
        """Send a related notification on the request's stream (may upgrade JSON to SSE)."""

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a server-to-client request related to this call and wait for its result.

        Raises ToolError when the transport has no back channel.
        """


class InputRequired(Exception):
    """Raised inside a modern-era handler that needs client input it has not got yet."""

    def __init__(self, key: str, request: dict[str, Any]) -> None:
        super().__init__(key)
        self.key = key
        self.request = request


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
    ) -> None:
        self.era = era
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

    async def elicit(self, message: str, requested_schema: dict[str, Any]) -> dict[str, Any]:
        """Ask the user for structured input; returns the ElicitResult (``action``, ``content``)."""
        self._require("elicitation")
        params = {"mode": "form", "message": message, "requestedSchema": requested_schema}
        if self.era is Era.LEGACY and self.protocol_version < "2025-11-25":
            params.pop("mode")
        return await self._ask("elicitation/create", params)

    async def sample(self, messages: list[dict[str, Any]], *, max_tokens: int, **extra: Any) -> dict[str, Any]:
        """Ask the client's model for a completion; returns the CreateMessageResult."""
        self._require("sampling")
        params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens, **extra}
        return await self._ask("sampling/createMessage", params)

    def _require(self, capability: str) -> None:
        """Modern era: -32021 names the capability; legacy: the tool fails (isError)."""
        if capability in self.client_capabilities:
            return
        if self.era is Era.MODERN:
            raise MissingCapability(
                f"Missing client capability: {capability}", data={"requiredCapabilities": {capability: {}}}
            )
        raise ToolError(f"the client did not declare the {capability} capability", code="capability_missing")

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        key = f"input-{self._asks}"
        self._asks += 1
        if self.era is Era.LEGACY:
            return await self._outbound.request(method, params)
        if key in self._input_responses:
            answer = self._input_responses[key]
            if not isinstance(answer, dict):
                raise ToolError(f"inputResponses[{key!r}] must be an object", code="invalid_input_response")
            return answer
        raise InputRequired(key, {"method": method, "params": params})
