"""Built-in tools: thin typed functions over the node's services.

Each module holds its tools as module-level async functions with module-level models, lists
them in ``TOOLS`` (:class:`~triomcp.server.tools.toolset.BuiltinTool`) and adds them, and its
resources, in ``register``. A tool reaches the node, the queue and the rest with
:func:`~triomcp.server.services.services_of`.
"""

from triomcp.mcp.registry import Registry
from triomcp.server.tools import cache, p2p, status, taskqueue

__all__ = ["register_builtin_tools"]


def register_builtin_tools(registry: Registry) -> None:
    status.register(registry)
    p2p.register(registry)
    taskqueue.register(registry)
    cache.register(registry)
