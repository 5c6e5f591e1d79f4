"""MCP over HTTP as a client outside the server speaks it: headers and bodies for both eras, and
small senders for them (blocking httpx, and httpx under Trio).

A modern request's ``_meta`` comes from :func:`triomcp.mcp.results.modern_meta`, the builder the
server itself uses to call its peers, so the protocol version and the meta keys live in one place.
URLs here are a server's base (``http://127.0.0.1:PORT``); the endpoint is ``/mcp``.
"""

from __future__ import annotations

from typing import Any

import httpx

from triomcp.mcp.results import modern_meta
from triomcp.mcp.versions import LATEST_LEGACY_VERSION, LATEST_MODERN_VERSION

__all__ = [
    "ACCEPT",
    "INITIALIZED",
    "JSON_HEADERS",
    "LEGACY",
    "MODERN",
    "call",
    "initialize",
    "legacy_headers",
    "modern_call",
    "modern_headers",
    "open_session",
    "open_session_async",
    "requests_in_flight",
    "structured",
    "tool_call",
]

MODERN = LATEST_MODERN_VERSION
LEGACY = LATEST_LEGACY_VERSION
ACCEPT = "application/json, text/event-stream"
JSON_HEADERS = {"content-type": "application/json", "accept": ACCEPT}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def modern_headers(method: str, name: str | None = None, *, accept: str = ACCEPT) -> dict[str, str]:
    """A modern request's headers: the version, ``Mcp-Method`` and (tools, prompts, tasks) ``Mcp-Name``."""
    headers = {**JSON_HEADERS, "accept": accept, "mcp-protocol-version": MODERN, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


def legacy_headers(session_id: str, version: str = LEGACY) -> dict[str, str]:
    """A legacy request's headers inside the session ``session_id``."""
    return {**JSON_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": version}


def tool_call(tool: str, arguments: dict[str, Any], ident: int | str = 1, *,
              meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``tools/call`` request body; ``meta`` is its ``_meta`` (a modern request needs one)."""
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}


def modern_call(tool: str, arguments: dict[str, Any], ident: int | str = 1, *, accept: str = ACCEPT,
                **meta: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of a modern (stateless) ``tools/call``; ``meta`` adds ``_meta`` keys."""
    return modern_headers("tools/call", tool, accept=accept), tool_call(tool, arguments, ident,
                                                                         meta=modern_meta(**meta))


def initialize(version: str = LEGACY, ident: int | str = 0, client: str = "harness") -> dict[str, Any]:
    """A legacy ``initialize`` request body."""
    return {"jsonrpc": "2.0", "id": ident, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": client, "version": "1"}}}


def call(url: str, tool: str, arguments: dict[str, Any], timeout: float = 30, *,
         accept: str = ACCEPT) -> httpx.Response:
    """One modern ``tools/call`` to the server at ``url``, blocking."""
    headers, body = modern_call(tool, arguments, accept=accept)
    return httpx.post(f"{url}/mcp", json=body, headers=headers, timeout=timeout)


def structured(response: httpx.Response) -> dict[str, Any]:
    """The ``structuredContent`` of a ``tools/call`` answer ({} when it has none)."""
    data = response.json()
    if "result" not in data:
        raise RuntimeError(f"not a result: {data}")
    return dict(data["result"].get("structuredContent") or {})


def open_session(url: str, version: str = LEGACY, timeout: float = 5) -> dict[str, str]:
    """Open a legacy session (``initialize``, then ``notifications/initialized``), blocking;
    returns the headers of a request inside it."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        reply = client.post("/mcp", headers=JSON_HEADERS, json=initialize(version))
        reply.raise_for_status()
        headers = legacy_headers(reply.headers["mcp-session-id"], version)
        client.post("/mcp", headers=headers, json=INITIALIZED).raise_for_status()
    return headers


async def open_session_async(client: httpx.AsyncClient, url: str = "", version: str = LEGACY) -> dict[str, str]:
    """:func:`open_session` on ``client`` (``url`` may be empty when the client has a base URL)."""
    reply = await client.post(f"{url}/mcp", headers=JSON_HEADERS, json=initialize(version))
    reply.raise_for_status()
    headers = legacy_headers(reply.headers["mcp-session-id"], version)
    (await client.post(f"{url}/mcp", headers=headers, json=INITIALIZED)).raise_for_status()
    return headers


def requests_in_flight(url: str, timeout: float = 5) -> int:
    """How many MCP requests the server at ``url`` is handling now (its own count: the handler
    has started and not yet returned), from ``/metrics``. It does not count this request."""
    reply = httpx.get(f"{url}/metrics", timeout=timeout)
    reply.raise_for_status()
    for line in reply.text.splitlines():
        name, _, value = line.partition(" ")
        if name == "triomcp_mcp_requests_in_flight":
            return int(float(value))
    raise RuntimeError(f"{url}/metrics has no triomcp_mcp_requests_in_flight")
