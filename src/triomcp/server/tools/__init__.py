"""Built-in tools: thin typed functions over the node's services."""

from triomcp.mcp.registry import Registry
from triomcp.server.tools import cache, p2p, status, taskqueue

__all__ = ["register_builtin_tools"]


def register_builtin_tools(registry: Registry) -> None:
    status.register(registry)
    p2p.register(registry)
    taskqueue.register(registry)
    cache.register(registry)
