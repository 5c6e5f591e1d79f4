"""Concurrent MCP clients (modern stateless calls and legacy sessions) with httpx under Trio; and
:func:`wrk_overload`: wrk past the node's admission capacity, with probes timing served and refused calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from typing import Any

import httpx
import trio

from harness import wrk
from harness.mcp_http import (
    JSON_HEADERS,
    initialize,
    legacy_headers,
    modern_call,
    open_session_async,
    tool_call,
)

OVERLOAD_SCRIPT = wrk.CALL_SCRIPT
"""The same script as every wrk call: it also sorts answers into served, refused and failed."""
PROBE_CONNECTIONS = 4
"""Keep-alive connections per probe, each sending one call after another."""
OTHER_ADDRESS = "127.0.0.2"
"""Another loopback address: with authorization off, another principal than wrk's 127.0.0.1."""


async def run(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients calling ``server_status`` for ``seconds``; half of them over a legacy session."""
    latencies: list[float] = []
    refusals: list[float] = []
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
                    if r.status_code == 503 and r.json().get("error", {}).get("code") == -32010:
                        refusals.append(time.perf_counter() - t0)  # admission control: deliberate
                    elif r.status_code != 200 or "result" not in r.json():
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
    return {"clients": clients, "seconds": seconds, "calls": calls, "ok": len(latencies),
            "errors": sum(errors.values()), "errors_by_kind": errors, "p50_ms": _pct(latencies, 0.50),
            "p99_ms": _pct(latencies, 0.99), "calls_per_s": round(len(latencies) / seconds, 1),
            "refused_503": len(refusals), "refusal_p50_ms": _pct(refusals, 0.50)}


def _pct(values: list[float], p: float) -> float | None:
    """The ``p`` quantile of ``values`` (seconds) in milliseconds."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None


def _probe(url: str, source: str, seconds: float, tally: dict[str, list[float]]) -> None:
    """One keep-alive connection from ``source`` calling ``server_status`` for ``seconds``; each
    answer's latency goes to ``served``, ``refused`` (503, -32010) or ``failed`` in ``tally``."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    headers, body = modern_call("server_status", {}, 1)
    payload = json.dumps(body).encode()
    end = time.monotonic() + seconds
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/mcp", payload, headers)
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                tally["failed"].append(time.perf_counter() - t0)
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
                continue
            kind = ("served" if r.status == 200 and b'"result"' in data else
                    "refused" if r.status == 503 and b'"code":-32010' in data.replace(b" ", b"") else "failed")
            tally[kind].append(time.perf_counter() - t0)
    finally:
        conn.close()


def wrk_overload(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """wrk from 127.0.0.1 (one principal) with ``connections`` connections calling ``server_status``
    for ``seconds``, sorting answers into served, refused (503, -32010) and failed; meanwhile two
    probes of :data:`PROBE_CONNECTIONS` connections each time their calls: one from wrk's address
    (its answers are a sample of wrk's), one from :data:`OTHER_ADDRESS` (another principal)."""
    tallies: dict[str, dict[str, list[float]]] = {
        who: {"served": [], "refused": [], "failed": []} for who in ("same", "other")}
    probes = [threading.Thread(target=_probe, args=(url, source, seconds, tallies[who]), daemon=True)
              for who, source in (("same", "127.0.0.1"), ("other", OTHER_ADDRESS)) for _ in range(PROBE_CONNECTIONS)]
    for probe in probes:
        probe.start()
    out = wrk.report(url, OVERLOAD_SCRIPT, connections=connections, seconds=seconds, request_timeout=10.0,
                     env={"TOOL": "server_status", "ARGS": "{}"})
    for probe in probes:
        probe.join(timeout=60)
    result = wrk.parse(out)
    answers = re.search(r"ANSWERS served (\d+) refused (\d+) failed (\d+)", out)
    served, refused, failed = (int(n) for n in answers.groups()) if answers else (0, 0, 0)
    same, other = tallies["same"], tallies["other"]
    return {
        "connections": connections, "seconds": seconds, "rps": result.rps,
        "served_per_s": round(served / seconds, 1), "refused_per_s": round(refused / seconds, 1),
        "failed": failed, "socket_errors": result.socket_errors, "socket_errors_total": result.socket_errors_total,
        "timeouts": result.socket_errors.get("timeout", 0),
        "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,  # wrk's, served and refused together
        "served_p50_ms": _pct(same["served"], 0.50), "served_p99_ms": _pct(same["served"], 0.99),
        "refusal_p50_ms": _pct(same["refused"], 0.50), "refusal_p99_ms": _pct(same["refused"], 0.99),
        "probe_same": {k: len(v) for k, v in same.items()},
        "other_served_p50_ms": _pct(other["served"], 0.50), "other_served_p99_ms": _pct(other["served"], 0.99),
        "probe_other": {k: len(v) for k, v in other.items()},
    }


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
