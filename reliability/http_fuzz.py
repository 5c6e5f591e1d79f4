"""Malformed HTTP against a live server: generated inputs, each with a deadline, outcomes counted.

Inputs are generated from a seed (reproducible). Each is one of:

- an HTTP request sent with httpx (bad bodies, headers, methods, session ids, versions);
- a raw-socket exchange (oversized headers, slow bodies, truncated bodies, junk request lines).

``{SESSION}`` in a header value is replaced by a live legacy session id opened before the run.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from harness.mcp_http import (
    ACCEPT,
    JSON_HEADERS,
    LEGACY,
    MODERN,
    legacy_headers,
    modern_headers,
    open_session_async,
)
from reliability.checks import spec_shaped_error
from triomcp.mcp.results import modern_meta

DEADLINE = 10.0


@dataclass
class Case:
    kind: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: list[bytes] | None = None
    """Raw-socket chunks (the whole request, written in order)."""
    drip: float = 0.0
    """Seconds between raw chunks."""
    half_close: bool = False


@dataclass
class Tally:
    tried: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    """5xx other than 503."""
    overloaded: int = 0
    hung: int = 0
    closed: int = 0
    """Connection closed without a response (acceptable for broken requests)."""
    bad_error_bodies: int = 0
    """JSON bodies carrying ``error`` that are not spec-shaped JSON-RPC errors."""
    examples: list[str] = field(default_factory=list)

    def note(self, case: Case, outcome: str, detail: str = "") -> None:
        self.by_status[outcome] = self.by_status.get(outcome, 0) + 1
        if len(self.examples) < 20 and detail:
            self.examples.append(f"{case.kind}: {outcome} {detail}"[:300])


def _request(method: str, params: Any = None, ident: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if ident is not ...:
        msg["id"] = ident
    if params is not None:
        msg["params"] = params
    return msg


def _valid_call(rng: random.Random) -> dict[str, Any]:
    return _request("tools/call", {"name": "server_status", "arguments": {}, "_meta": modern_meta()}, rng.randrange(1000))


def _nested(depth: int, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


SHAPES: list[Any] = [
    {}, {"jsonrpc": "2.0"}, {"jsonrpc": "1.0", "id": 1, "method": "ping"}, {"jsonrpc": 2, "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, {"jsonrpc": "2.0", "id": [1], "method": "ping"},
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"}, {"jsonrpc": "2.0", "id": 1, "method": 7},
    {"jsonrpc": "2.0", "id": 1, "method": None}, {"jsonrpc": "2.0", "id": 1, "method": ""},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1, 2]},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "server_status", "arguments": [1]}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "server_status", "_meta": "x"}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "server_status", "_meta": {
        "io.modelcontextprotocol/protocolVersion": 5}}},
    {"jsonrpc": "2.0", "id": 1, "result": {}}, {"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}},
    {"jsonrpc": "2.0", "id": 1, "error": "x"}, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 5}},
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": 3}},
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": None},
    {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": 5}},
    {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///etc/passwd"}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": {"x": 1}}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "!!!not-base64"}},
    {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": None}},
    {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "nope"}},
    {"jsonrpc": "2.0", "id": 1, "method": "completion/complete", "params": {"ref": 1}},
    {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": {"x": 1}}},
    {"jsonrpc": "2.0", "id": 1, "method": "\ud800"}, {"jsonrpc": "2.0", "id": "\udfff", "method": "ping"},
    [], [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], [1, 2, 3], "a string", 42, None, True,
]

RAW_JSON = [b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}', b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}', b'{"jsonrpc":"2.0","id":1,"method":"pi\\u0000ng"}',
            b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}', b'\xef\xbb\xbf{"jsonrpc":"2.0"}',
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"server_status","arguments":{"x":"\\ud800"}}}',
            b"", b" ", b"null", b"\x00\x00\x00", b'{"a":"\xff"}']


REGRESSIONS = [{"jsonrpc": "2.0", "id": "\udfff", "method": "ping"}]
"""Inputs that once got a 500 (a lone surrogate in a modern-era request id could not be encoded)."""


def generate(n: int, seed: int, max_body_bytes: int) -> list[Case]:
    """``n`` malformed inputs, reproducible from ``seed``."""
    return _generate(n, random.Random(seed), max_body_bytes)


def _generate(n: int, rng: random.Random, max_body_bytes: int) -> list[Case]:
    makers = [_random_bytes, _truncated_json, _wrong_shape, _raw_json, _huge_params, _deep_nesting, _content_type,
              _accept, _session_id, _last_event_id, _protocol_version, _modern_mismatch, _http_method,
              _oversized_headers, _oversized_body, _slow_body, _truncated_body, _junk_request_line,
              _legacy_session_garbage]
    return [makers[i % len(makers)](rng, max_body_bytes) for i in range(n)]


def _random_bytes(rng: random.Random, limit: int) -> Case:
    return Case("random-bytes", headers=_maybe_modern(rng), body=rng.randbytes(rng.randrange(0, 2048)))


def _maybe_modern(rng: random.Random) -> dict[str, str]:
    return modern_headers("tools/call", "server_status") if rng.random() < 0.5 else dict(JSON_HEADERS)


def _truncated_json(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    return Case("truncated-json", headers=_maybe_modern(rng), body=body[: rng.randrange(0, len(body))])


def _wrong_shape(rng: random.Random, limit: int) -> Case:
    shape = rng.choice(SHAPES)
    body = json.dumps(shape, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return Case("wrong-shape", headers=_maybe_modern(rng), body=body)


def _raw_json(rng: random.Random, limit: int) -> Case:
    return Case("odd-json", headers=_maybe_modern(rng), body=rng.choice(RAW_JSON))


def _huge_params(rng: random.Random, limit: int) -> Case:
    size = rng.randrange(limit // 4, max(limit // 4 + 1, limit - 1024))
    msg = _valid_call(rng)
    if rng.random() < 0.5:
        msg["params"]["arguments"] = {"blob": "x" * size}
    else:
        msg["params"]["arguments"] = {f"k{i}": i for i in range(size // 12)}
    return Case("huge-params", headers=_maybe_modern(rng), body=json.dumps(msg).encode()[: limit - 1])


def _deep_nesting(rng: random.Random, limit: int) -> Case:
    depth = rng.choice([100, 1000, 5000, min(20000, limit // 3)])
    prefix = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"server_status","arguments":{"x":'
    if rng.random() < 0.3:
        return Case("deep-nesting", headers=_maybe_modern(rng), body=_nested(depth, rng))
    return Case("deep-nesting", headers=_maybe_modern(rng), body=prefix + _nested(depth, rng) + b"}}}")


def _content_type(rng: random.Random, limit: int) -> Case:
    ctype = rng.choice(["text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                        "application/json; charset=latin-1", "application/jsonx", "application/json;;;",
                        "APPLICATION/JSON", "application/*", "*/*", "application/json; charset=\"utf-8\""])
    headers = {**_maybe_modern(rng), "content-type": ctype}
    return Case("content-type", headers=headers, body=json.dumps(_valid_call(rng)).encode())


def _accept(rng: random.Random, limit: int) -> Case:
    accept = rng.choice(["", "text/html", "text/event-stream", "application/json", "*/*", "application/*",
                         "application/json;q=0", "text/event-stream;q=0, application/json;q=0", "garbage/",
                         ",,,", "application/json, text/event-stream;q=abc"])
    headers = {**_maybe_modern(rng), "accept": accept}
    return Case("accept", headers=headers, body=json.dumps(_valid_call(rng)).encode())


def _session_id(rng: random.Random, limit: int) -> Case:
    sid = rng.choice(["", "nope", "0" * 32, "x" * 4000, "{SESSION}x", "../../etc/passwd", "\t", "é".encode().decode(
        "latin-1"), "a b c", "{SESSION}, {SESSION}"])
    method = rng.choice(["POST", "GET", "DELETE"])
    headers = legacy_headers(sid)
    if method == "GET":
        headers["accept"] = "text/event-stream"
    return Case("session-id", method=method, headers=headers,
                body=json.dumps(_request("ping")).encode() if method == "POST" else b"")


def _last_event_id(rng: random.Random, limit: int) -> Case:
    value = rng.choice(["", "abc", "-1", "99999999999999999999999", "x.1", "1.1.1", ".", "..", "s.-5", "s.1e9",
                        "z" * 3000, "\x7f", "0.0", "nan", "{SESSION}.1"])
    sid = rng.choice(["{SESSION}", "{SESSION}", "unknown-session"])
    headers = {"accept": "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": LEGACY,
               "last-event-id": value}
    return Case("last-event-id", method="GET", headers=headers)


def _protocol_version(rng: random.Random, limit: int) -> Case:
    version = rng.choice(["2099-01-01", "", "garbage", "2024-01-01", LEGACY, "2026-07-28, 2025-11-25", "0" * 500,
                          "2026-07-28\x7f"])
    headers = {**modern_headers("tools/call", "server_status"), "mcp-protocol-version": version}
    return Case("protocol-version", headers=headers, body=json.dumps(_valid_call(rng)).encode())


def _modern_mismatch(rng: random.Random, limit: int) -> Case:
    method = rng.choice(["tools/list", "ping", "", "tools/call\x01", "x" * 1000])
    name = rng.choice([None, "other_tool", "", "server_status"])
    return Case("modern-mismatch", headers=modern_headers(method, name), body=json.dumps(_valid_call(rng)).encode())


def _http_method(rng: random.Random, limit: int) -> Case:
    method = rng.choice(["PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "GET", "DELETE"])
    return Case("http-method", method=method, headers=_maybe_modern(rng), body=b"{}" if method in ("PUT", "PATCH")
                else b"")


def _oversized_headers(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    if rng.random() < 0.5:  # one huge header line
        lines = [f"x-big: {'a' * rng.choice([20_000, 70_000, 200_000])}"]
    else:  # very many headers
        lines = [f"x-h{i}: {'b' * 100}" for i in range(rng.choice([200, 1000, 3000]))]
    head = "\r\n".join(["POST /mcp HTTP/1.1", "host: 127.0.0.1", "content-type: application/json",
                        f"accept: {ACCEPT}", f"content-length: {len(body)}", *lines, "", ""]).encode()
    return Case("oversized-headers", raw=[head, body])


def _oversized_body(rng: random.Random, limit: int) -> Case:
    size = limit + rng.choice([1, 1000, limit])
    if rng.random() < 0.5:
        return Case("oversized-body", headers=_maybe_modern(rng), body=b"{" + b" " * (size - 2) + b"}")
    # chunked, so the server cannot refuse it from the content-length alone
    chunk = b" " * 16384
    parts = [b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: " + ACCEPT.encode()
             + b"\r\ntransfer-encoding: chunked\r\n\r\n"]
    for _ in range(size // len(chunk) + 1):
        parts.append(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return Case("oversized-body-chunked", raw=parts)


def _slow_body(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    head = (b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: " + ACCEPT.encode()
            + b"\r\ncontent-length: %d\r\nmcp-protocol-version: " % len(body) + MODERN.encode()
            + b"\r\nmcp-method: tools/call\r\nmcp-name: server_status\r\n\r\n")
    pieces = [body[i : i + 16] for i in range(0, len(body), 16)]
    return Case("slow-body", raw=[head, *pieces], drip=rng.choice([0.01, 0.03]))


def _truncated_body(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    cut = rng.randrange(0, len(body))
    head = (b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: " + ACCEPT.encode()
            + b"\r\ncontent-length: %d\r\n\r\n" % len(body))
    if rng.random() < 0.3:  # the head itself cut short
        return Case("truncated-head", raw=[head[: rng.randrange(1, len(head))]], half_close=True)
    return Case("truncated-body", raw=[head, body[:cut]], half_close=True)


def _junk_request_line(rng: random.Random, limit: int) -> Case:
    line = rng.choice([b"GARBAGE\r\n\r\n", b"POST /mcp HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                       b"POST /mcp HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
                       b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nabcde",
                       b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                       b"GET /" + b"a" * 50_000 + b" HTTP/1.1\r\n\r\n", rng.randbytes(300)])
    return Case("junk-request", raw=[line], half_close=True)


def _legacy_session_garbage(rng: random.Random, limit: int) -> Case:
    headers = legacy_headers("{SESSION}")
    body = rng.choice([rng.randbytes(64), json.dumps(rng.choice(SHAPES)).encode(), b"{",
                       json.dumps(_request("tools/call", {"name": "server_status", "arguments": {}})).encode()])
    return Case("legacy-session", headers=headers, body=body)


# -- running ----------------------------------------------------------------------------------

def _check_body(tally: Tally, case: Case, content_type: str, body: bytes, status: int) -> None:
    messages: list[Any] = []
    if content_type.startswith("application/json"):
        try:
            messages = [json.loads(body)]
        except ValueError:
            if status >= 400 and body:
                tally.bad_error_bodies += 1
                tally.note(case, "bad-body", repr(body[:120]))
            return
    elif content_type.startswith("text/event-stream"):
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("data:") and line[5:].strip():
                try:
                    messages.append(json.loads(line[5:]))
                except ValueError:
                    tally.bad_error_bodies += 1
    for message in messages:
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and "error" in item and not spec_shaped_error(item):
                tally.bad_error_bodies += 1
                tally.note(case, "bad-error-shape", json.dumps(item)[:200])


def _record(tally: Tally, case: Case, status: int, detail: str = "") -> None:
    tally.note(case, str(status), detail if status >= 500 else "")
    if status == 503:
        tally.overloaded += 1
    elif status >= 500:
        tally.server_errors += 1


async def _http_case(client: httpx.AsyncClient, url: str, case: Case, tally: Tally) -> None:
    try:
        with trio.fail_after(DEADLINE):
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in case.headers.items()]
            async with client.stream(case.method, f"{url}/mcp", headers=headers,
                                     content=case.body if case.body or case.method in ("POST", "PUT", "PATCH")
                                     else None) as response:
                body = b""
                if not (case.method == "GET" and response.headers.get("content-type", "").startswith(
                        "text/event-stream")):  # a GET stream stays open: its status is the answer
                    body = await response.aread()
        _record(tally, case, response.status_code, body[:200].decode("utf-8", "replace"))
        _check_body(tally, case, response.headers.get("content-type", ""), body, response.status_code)
    except trio.TooSlowError:
        tally.hung += 1
        tally.note(case, "hung", "no answer within the deadline")
    except httpx.LocalProtocolError:
        tally.note(case, "not-sent")  # the client refused to send it (e.g. an illegal header value)
    except httpx.HTTPError as exc:
        tally.closed += 1
        tally.note(case, "closed", "" if case.kind.startswith("oversized") else type(exc).__name__)


def _status_of(head: bytes) -> int | None:
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


async def _raw_case(host: str, port: int, case: Case, tally: Tally) -> None:
    assert case.raw is not None
    try:
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                received = b""

                async def reader() -> None:
                    nonlocal received
                    while b"\r\n\r\n" not in received:
                        try:
                            data = await stream.receive_some(65536)
                        except trio.BrokenResourceError:
                            return
                        if not data:
                            return
                        received += data
                    nursery.cancel_scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    try:
                        for chunk in case.raw:
                            await stream.send_all(chunk)
                            if case.drip:
                                await trio.sleep(case.drip)
                        if case.half_close:
                            await stream.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
        status = _status_of(received)
        if status is None:
            tally.closed += 1
            tally.note(case, "closed")
        else:
            _record(tally, case, status, received[:200].decode("latin-1"))
    except trio.TooSlowError:
        tally.hung += 1
        tally.note(case, "hung", "no answer within the deadline")
    except OSError as exc:
        tally.closed += 1
        tally.note(case, "closed", type(exc).__name__)


async def run(url: str, cases: list[Case], *, concurrency: int = 8) -> Tally:
    """Send every case (``concurrency`` at a time); the tally of outcomes."""
    tally = Tally()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=DEADLINE + 5, limits=limits) as client:
        session = (await open_session_async(client, url))["mcp-session-id"]
        for case in cases:
            case.headers = {k: v.replace("{SESSION}", session) for k, v in case.headers.items()}
        limiter = trio.CapacityLimiter(concurrency)

        async def one(case: Case) -> None:
            async with limiter:
                tally.tried += 1
                if case.raw is not None:
                    await _raw_case(host, int(port), case, tally)
                else:
                    await _http_case(client, url, case, tally)

        async with trio.open_nursery() as nursery:
            for case in cases:
                nursery.start_soon(one, case)
    return tally


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    return {"inputs": tally.tried, "server_errors_5xx": tally.server_errors, "overloaded_503": tally.overloaded,
            "hung": tally.hung, "closed_without_response": tally.closed,
            "malformed_error_bodies": tally.bad_error_bodies, "by_status": dict(sorted(tally.by_status.items())),
            "examples": tally.examples, "seconds": round(seconds, 1)}


def now() -> float:
    return time.monotonic()
