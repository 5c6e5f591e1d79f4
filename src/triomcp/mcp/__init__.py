"""The sans-I/O MCP engine: both protocol eras, no I/O library imported.

The public facade for tool authors and transports.
"""

from triomcp.mcp import content
from triomcp.mcp.config import EngineConfig, EngineHooks, Forwarder
from triomcp.mcp.context import ToolContext
from triomcp.mcp.engine import Engine, EngineStatistics
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.plugins import PLUGIN_GROUP, Plugin, load_plugins
from triomcp.mcp.registry import Registry, ToolDef, ToolResult
from triomcp.mcp.versions import LEGACY_VERSIONS, MODERN_VERSIONS, SUPPORTED_VERSIONS, Era

__all__ = [
    "LEGACY_VERSIONS",
    "MODERN_VERSIONS",
    "PLUGIN_GROUP",
    "SUPPORTED_VERSIONS",
    "Call",
    "Engine",
    "EngineConfig",
    "EngineHooks",
    "EngineStatistics",
    "Era",
    "Forwarder",
    "HttpRequest",
    "Listen",
    "Plugin",
    "Registry",
    "Reply",
    "StreamGrant",
    "ToolContext",
    "ToolDef",
    "ToolResult",
    "content",
    "load_plugins",
]
