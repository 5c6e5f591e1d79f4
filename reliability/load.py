"""wrk past the node's admission capacity, with probes timing its served and refused calls
(:func:`wrk_overload`); legacy sessions past ``mcp.max_sessions`` (:func:`past_the_limit`); and what
the load generators share: the refusal's code, how a well-behaved client reads ``Retry-After``
(:func:`retry_after_wait`), quantiles in milliseconds. The MCP clients of both eras spread over
several processes are :mod:`reliability.load_clients`.

**wrk ignores Retry-After**: each of its connections sends its next request as soon as it has an
answer, a refusal included. So its steps stay the adversary a node must survive, the client that
retries at once; the request gate (:mod:`triomcp.server.http_gate`) does not read such a
connection again for ``http.refusal_pause`` (1 s, the ``Retry-After``), so the request a refused
connection sends next waits that pause, and wrk's latencies (served and refused together) include it.

**The probes honour it**, as the Python clients do: after a deliberate refusal (503 with JSON-RPC
-32010) a probe connection waits the answer's ``Retry-After`` before its next call. Their refusal
latencies then time refusals (send to answer), not the pause wrk's connections are given; their
served latencies time calls served while wrk floods.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import http.client
import json
import re
import threading
import time
from typing import Any

import httpx
import trio

from harness import wrk
from harness.mcp_http import JSON_HEADERS, initialize, legacy_headers, modern_call

OVERLOAD_SCRIPT = wrk.CALL_SCRIPT
"""The same script as every wrk call: it also sorts answers into served, refused and failed."""
PROBE_CONNECTIONS = 4
"""Keep-alive connections per probe, each sending one call after another."""
OTHER_ADDRESS = "127.0.0.2"
"""Another loopback address: with authorization off, another principal than wrk's 127.0.0.1."""
REFUSED = -32010
"""The JSON-RPC code of a deliberate refusal (admission control), answered with HTTP 503."""
_REFUSED_CODE = f'"code":{REFUSED}'.encode()
RETRY_AFTER_DEFAULT = 1.0
"""Seconds a client waits after a deliberate refusal without a readable ``Retry-After`` (the node
always sends one, of 1 s)."""
RETRY_AFTER_BOUND = 5.0
"""Most seconds a client waits after a refusal, whatever its ``Retry-After`` says."""


def retry_after_wait(value: str | None, left: float) -> float:
    """Seconds a well-behaved client waits after a deliberate refusal whose ``Retry-After`` is
    ``value`` (delta-seconds or an HTTP-date; absent or unreadable: :data:`RETRY_AFTER_DEFAULT`):
    at most :data:`RETRY_AFTER_BOUND`, and never more than the ``left`` seconds of its step."""
    wait = RETRY_AFTER_DEFAULT
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        wait = float(text)
    elif text:
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(text)
            wait = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(0.0, min(wait, RETRY_AFTER_BOUND, left))


def quantile_ms(values: list[float], p: float) -> float | None:
    """The ``p`` quantile of ``values`` (seconds) in milliseconds."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None


def _probe(url: str, source: str, seconds: float, tally: dict[str, list[float]]) -> None:
    """One keep-alive connection from ``source`` calling ``server_status`` for ``seconds``; each
    answer's latency goes to ``served``, ``refused`` (503, -32010) or ``failed`` in ``tally``. After
    a refusal it waits the answer's ``Retry-After`` (:func:`retry_after_wait`) before its next call."""
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
                    "refused" if r.status == 503 and _REFUSED_CODE in data.replace(b" ", b"") else "failed")
            tally[kind].append(time.perf_counter() - t0)
            if kind == "refused":
                time.sleep(retry_after_wait(r.getheader("retry-after"), end - time.monotonic()))
    finally:
        conn.close()


def wrk_overload(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """wrk from 127.0.0.1 (one principal) with ``connections`` connections calling ``server_status``
    for ``seconds``, sorting answers into served, refused (503, -32010) and failed; meanwhile two
    probes of :data:`PROBE_CONNECTIONS` connections each time their calls: one from wrk's address
    (its answers are a sample of the node's to wrk's principal, timed without the pause wrk's
    connections are given: a probe honours ``Retry-After``), one from :data:`OTHER_ADDRESS`
    (another principal)."""
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
        "served_p50_ms": quantile_ms(same["served"], 0.50), "served_p99_ms": quantile_ms(same["served"], 0.99),
        "refusal_p50_ms": quantile_ms(same["refused"], 0.50), "refusal_p99_ms": quantile_ms(same["refused"], 0.99),
        "probe_same": {k: len(v) for k, v in same.items()},
        "other_served_p50_ms": quantile_ms(other["served"], 0.50), "other_served_p99_ms": quantile_ms(other["served"], 0.99),
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
