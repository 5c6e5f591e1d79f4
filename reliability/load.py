"""Concurrent MCP clients (modern stateless calls and legacy sessions) with httpx under Trio."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
import trio

from harness.mcp_http import (
    JSON_HEADERS,
    initialize,
    legacy_headers,
    modern_call,
    open_session_async,
    tool_call,
)


async def run(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients calling ``server_status`` for ``seconds``; half of them over a legacy session."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    calls = 0

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        end = trio.current_time() + seconds

        async def one(k: int) -> None:
            nonlocal calls
            headers, body = modern_call("server_status", {}, k)
            session: str | None = None
            if k % 2:
                try:
                    headers = await open_session_async(client, url)
                except (httpx.HTTPError, KeyError) as exc:
                    err(f"open-session {type(exc).__name__}")
                    return
                session = headers["mcp-session-id"]
                body = tool_call("server_status", {}, k)
            while trio.current_time() < end:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/mcp", json=body, headers=headers)
                    calls += 1
                    if r.status_code != 200 or "result" not in r.json():
                        err(str(r.status_code))
                    else:
                        latencies.append(time.perf_counter() - t0)
                except (httpx.HTTPError, ValueError) as exc:
                    err(type(exc).__name__)
            if session is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(f"{url}/mcp", headers=headers)

        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(one, k)
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

    return {"clients": clients, "seconds": seconds, "calls": calls, "ok": len(latencies),
            "errors": sum(errors.values()), "errors_by_kind": errors, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "calls_per_s": round(len(latencies) / seconds, 1)}


async def past_the_limit(url: str, sessions: int) -> dict[str, Any]:
    """Open ``sessions`` legacy sessions at once (more than ``mcp.max_sessions``): 503s, not crashes."""
    statuses: dict[str, int] = {}
    opened: list[str] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        async def one(k: int) -> None:
            try:
                r = await client.post(f"{url}/mcp", headers=JSON_HEADERS, json=initialize(ident=k, client="x"))
                key = str(r.status_code)
                if r.status_code == 200:
                    opened.append(r.headers["mcp-session-id"])
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

        async with trio.open_nursery() as nursery:
            for k in range(sessions):
                nursery.start_soon(one, k)
        for sid in opened:  # give them back
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(f"{url}/mcp", headers=legacy_headers(sid))
    return {"sessions_tried": sessions, "by_status": dict(sorted(statuses.items())),
            "server_errors_5xx": sum(v for k, v in statuses.items() if k.isdigit() and int(k) >= 500 and k != "503"),
            "overloaded_503": statuses.get("503", 0)}
