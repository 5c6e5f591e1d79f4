"""Drive the sans-I/O engine directly: no server, no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp_types import methods as spec

from tests.toolkit import register_test_tools
from triomcp.mcp.engine import Engine, EngineConfig
from triomcp.mcp.outcomes import Call, HttpRequest, Reply
from triomcp.mcp.registry import Registry
from triomcp.testing import RecordingOutbound

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def make_engine(*, clock: Callable[[], float] | None = None, **config: Any) -> Engine:
    registry = Registry()
    register_test_tools(registry)
    if clock is None:
        return Engine(registry, EngineConfig(**config))
    return Engine(registry, EngineConfig(**config), clock=clock)


def meta(caps: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": caps or {},
        **extra,
    }


def post(engine: Engine, body: Any, headers: dict[str, str] | None = None, principal: str | None = None) -> Any:
    h = {"content-type": "application/json", "accept": ACCEPT, **(headers or {})}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return engine.handle(HttpRequest("POST", h, raw, principal))


def modern(engine: Engine, method: str, params: dict[str, Any] | None = None, *, ident: int = 1,
           caps: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    params = dict(params or {})
    params.setdefault("_meta", meta(caps))
    h = {"mcp-protocol-version": MODERN, "mcp-method": method}
    name = params.get("name") if method in ("tools/call", "prompts/get") else params.get("uri")
    if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
        h["mcp-name"] = name
    h.update(headers or {})
    return post(engine, {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}, h)


def initialize(engine: Engine, version: str = "2025-11-25", caps: dict[str, Any] | None = None,
               principal: str | None = None) -> str:
    reply = post(engine, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": caps or {}, "clientInfo": {"name": "t", "version": "1"}}},
        principal=principal)
    assert reply.status == 200, reply
    sid = reply.headers["mcp-session-id"]
    assert post(engine, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"mcp-session-id": sid, "mcp-protocol-version": version}, principal=principal).status == 202
    return str(sid)


def legacy(engine: Engine, sid: str, method: str, params: dict[str, Any] | None = None, *, ident: int = 1,
           version: str = "2025-11-25", principal: str | None = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        body["params"] = params
    return post(engine, body, {"mcp-session-id": sid, "mcp-protocol-version": version}, principal=principal)


Recorder = RecordingOutbound
"""An Outbound that records what the handler sent (``triomcp.testing.RecordingOutbound``)."""


def run_sync(call: Call, outbound: Any = None) -> dict[str, Any] | None:
    """Run a handler that never suspends, without an event loop."""
    coro = call.run(outbound or Recorder())
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("handler suspended; use an async test")


def check_result(method: str, version: str, result: dict[str, Any]) -> None:
    """The result must validate against the official schema of that version."""
    spec.serialize_server_result(method, version, result)


def error_of(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply, Reply), reply
    return reply.body["error"]  # type: ignore[no-any-return]
