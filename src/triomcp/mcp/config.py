"""What an :class:`~triomcp.mcp.engine.Engine` is built with: its settings and its collaborators.

The collaborators (:class:`EngineHooks`) are handed to the constructor, once; the engine is then
reached only through its own methods (never by assigning attributes on its parts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from triomcp.mcp.context import ToolContext
    from triomcp.mcp.core import Request
    from triomcp.mcp.registry import ToolDef
    from triomcp.mcp.tasks import TaskBackend

__all__ = ["CallObserver", "EngineConfig", "EngineHooks", "Forwarder", "ToolGuard"]


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
    owner_tag: str = ""
    """This node's tag (:mod:`triomcp._owner`), in front of the session ids and ``requestState`` it mints."""


class Forwarder(Protocol):
    """Where tool calls and resource reads go instead of the local registry (``local-node`` mode)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """The ``CallToolResult`` of ``name`` run elsewhere (without modern decorations)."""

    async def read_resource(self, uri: str, principal: str | None) -> dict[str, Any]:
        """The ``ReadResourceResult`` of ``uri`` read elsewhere."""


CallObserver = Callable[[str, str, str, float], None]
"""``(tool, era, outcome, seconds)`` after every tool call (metrics)."""

ToolGuard = Callable[["Request", "ToolDef"], None]
"""Raises ``HttpError(403, ...)`` when the caller may not call the tool; checked before the call
starts, so the refusal is an HTTP answer in both eras."""


@dataclass(frozen=True)
class EngineHooks:
    """The server's collaborators; every one is optional (a bare engine serves its registry)."""

    app_state: Any = None
    """What every handler's ``ToolContext.app_state`` carries (the server's services)."""
    tasks: TaskBackend | None = None
    """MCP tasks in both eras (the legacy utility, the modern extension), backed by this store."""
    forward: Forwarder | None = None
    """Run every tool call and resource read there instead (same registry, for listing)."""
    observe_call: CallObserver | None = None
    guard_tool: ToolGuard | None = None


AsyncHandler = Callable[["Request", "ToolContext"], Awaitable[dict[str, Any]]]
SyncHandler = Callable[["Request"], dict[str, Any]]
