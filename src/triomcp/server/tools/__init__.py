"""Built-in tools: thin typed functions over the node's services."""

from triomcp.mcp.registry import Registry
from triomcp.server.tools.status import register as register_status

__all__ = ["register_builtin_tools"]


def register_builtin_tools(registry: Registry) -> None:
    register_status(registry)
