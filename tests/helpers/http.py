"""Raw MCP over HTTP against a server under test (httpx): headers, a modern ``_meta``, a legacy session.

The wire shapes come from :mod:`harness.mcp_http`; what is here asserts, as a test does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from starlette.applications import Starlette

from harness.mcp_http import (
    ACCEPT,
    INITIALIZED,
    JSON_HEADERS,
    MODERN,
    initialize,
    legacy_headers,
    modern_headers,
)
from triomcp.mcp.results import modern_meta

__all__ = ["ACCEPT", "JSON_HEADERS", "MODERN", "meta", "modern_headers", "open_session", "watcher_started"]


def meta(**extra: Any) -> dict[str, Any]:
    """A modern request's ``_meta``; ``extra`` adds or replaces keys (the client capabilities, say)."""
    return modern_meta(**extra)


async def open_session(c: httpx.AsyncClient, version: str = "2025-11-25") -> dict[str, str]:
    """Open a legacy session on ``c`` (a client with the server's base URL), checking each answer;
    returns the headers of a request inside it."""
    r = await c.post("/mcp", headers=JSON_HEADERS, json=initialize(version, client="raw"))
    assert r.status_code == 200
    h = legacy_headers(r.headers["mcp-session-id"], version)
    r = await c.post("/mcp", headers=h, json=INITIALIZED)
    assert r.status_code == 202 and r.content == b""
    return h


def watcher_started(app: Starlette) -> trio.Event:
    """An event set once a call on ``/mcp`` has its disconnect watcher running: the endpoint starts
    one only for a call that outlives ``LateWatchers.after`` (from the app's sweeper task). Wraps
    the endpoint's ``watchers.add`` to observe that moment; what the watcher does is unchanged."""
    endpoint = next(route.endpoint for route in app.routes if getattr(route, "path", None) == "/mcp")
    watchers = endpoint.watchers
    started = trio.Event()
    add = watchers.add

    def add_observed(nursery: trio.Nursery, watch: Callable[[], Awaitable[None]]) -> int:
        async def observed() -> None:
            started.set()
            await watch()

        return int(add(nursery, observed))

    watchers.add = add_observed
    return started
