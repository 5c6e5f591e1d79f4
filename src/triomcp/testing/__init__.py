"""Test MCP tools, plugins and whole nodes in-process, on the caller's Trio loop, with no sockets.

- :class:`McpTestClient`: a client of a :class:`~triomcp.mcp.Registry`, an
  :class:`~triomcp.mcp.Engine` or an app, in either era (calls, resources, prompts, input,
  cancellation, tasks, subscriptions).
- :class:`InProcessApp`: an ASGI app served in-process (lifespan included), with streaming responses.
- :func:`make_tool_context` and :class:`RecordingOutbound`: call a handler directly.
- :func:`make_settings`: a node's settings for a test.
- ``triomcp.testing.plugin``: pytest fixtures (``pytest_plugins = ["triomcp.testing.plugin"]``).

See "Testing your tools" in ``docs/mcp.md``. The project's own tests use this first.
"""

from triomcp.errors import McpError
from triomcp.testing._answers import InputHandler
from triomcp.testing.asgi import InProcessApp
from triomcp.testing.client import McpTestClient, Subscription
from triomcp.testing.context import RecordingOutbound, make_tool_context
from triomcp.testing.exchange import Exchange, HttpResponse, SseEvent, StreamingResponse
from triomcp.testing.settings import make_settings

__all__ = [
    "Exchange",
    "HttpResponse",
    "InProcessApp",
    "InputHandler",
    "McpError",
    "McpTestClient",
    "RecordingOutbound",
    "SseEvent",
    "StreamingResponse",
    "Subscription",
    "make_settings",
    "make_tool_context",
]
