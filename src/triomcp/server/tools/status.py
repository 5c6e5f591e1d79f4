"""``server_status``: what this node is and how busy it is."""

from __future__ import annotations

from pydantic import BaseModel, Field

from triomcp import __version__
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry
from triomcp.mcp.versions import LEGACY_VERSIONS, MODERN_VERSIONS
from triomcp.server.services import services_of
from triomcp.server.tools.toolset import BuiltinTool, add_tools

__all__ = ["TOOLS", "NoArguments", "ServerStatus", "register", "server_status"]


class NoArguments(BaseModel):
    """This tool takes no arguments."""


class ServerStatus(BaseModel):
    version: str = Field(description="triomcp version")
    uptime_s: float = Field(description="seconds since the server started")
    eras: dict[str, list[str]] = Field(description="protocol versions served, by era")
    open_sessions: int = Field(description="legacy sessions open now")
    inflight_calls: int = Field(description="requests being handled now (including this one)")
    listeners: int = Field(description="modern subscriptions/listen streams open now")


async def server_status(args: NoArguments, ctx: ToolContext) -> ServerStatus:
    services = services_of(ctx)
    stats = services.engine.statistics()
    return ServerStatus(
        version=__version__,
        uptime_s=round(services.uptime(), 3),
        eras={"legacy": list(LEGACY_VERSIONS), "modern": list(MODERN_VERSIONS)},
        open_sessions=stats.open_sessions,
        inflight_calls=stats.inflight_calls,
        listeners=stats.listeners,
    )


TOOLS = [
    BuiltinTool(server_status, "Version, uptime, protocol eras served, open sessions and in-flight calls of "
                "this server.", group="status", read_only=True, idempotent=True),
]


def register(registry: Registry) -> None:
    add_tools(registry, TOOLS)
