"""The HTTP fuzzer's inputs: each a pure function of ``(seed, index)`` (no I/O here).

:func:`case` builds input ``index`` of ``seed`` from its own random source
(:func:`reliability.mutations.rng_for`); its kind is ``KINDS[index % len(KINDS)]``, so every run
of N inputs covers every kind about N / len(KINDS) times. :func:`wire` turns a case into the
exact bytes written to the socket. A case is one of:

- a *request* (method, target, headers, body): written as one well-framed HTTP/1.1 request with
  a correct ``content-length``, on a keep-alive connection the fuzzer reuses;
- a *raw* exchange (``raw``): bytes written as they are on a fresh connection (bad framing,
  oversized or odd header lines, chunked bodies, several requests pipelined, a body dripped
  slowly), then the write side is closed, so the server knows nothing more comes.

``{SESSION}`` in a header value (or a raw chunk) stands for a live legacy session id that the
fuzzer opens before the run.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.mcp_http import ACCEPT, JSON_HEADERS, LEGACY, MODERN, legacy_headers, modern_headers
from reliability.mutations import dumps, mutate_bytes, odd_value, replace_somewhere, rng_for
from triomcp.mcp.results import modern_meta

__all__ = ["MAKERS", "REGRESSIONS", "SESSION", "Case", "case", "generate", "wire"]

SESSION = "{SESSION}"


@dataclass(frozen=True)
class Case:
    kind: str
    method: str = "POST"
    target: str = "/mcp"
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers besides ``host`` (given here, it replaces the default) and ``content-length``."""
    body: bytes = b""
    raw: tuple[bytes, ...] | None = None
    """A raw exchange: the chunks written in order on a fresh connection."""
    drip: float = 0.0
    """Seconds between raw chunks."""
    requests: int = 1
    """Requests a raw exchange holds (pipelined ones): the responses it may get."""
    unimplemented: bool = False
    """It asks for what HTTP lets a server refuse with 501 Not Implemented: a transfer coding
    other than ``chunked`` (RFC 9112 section 6.1) or an unknown method (RFC 9110 section 9.1)."""
    seed: int = 0
    index: int = 0

    @property
    def ref(self) -> str:
        """``SEED:INDEX``: what regenerates this input (``python -m reliability --only http --replay``)."""
        return f"{self.seed}:{self.index}"


def wire(c: Case, host: str, session: str) -> list[bytes]:
    """The bytes of ``c`` as written (chunks, in order), ``{SESSION}`` replaced by ``session``."""
    if c.raw is not None:
        return [chunk.replace(SESSION.encode(), session.encode()) for chunk in c.raw]
    return [_request_bytes(c, host, session)]


def _request_bytes(c: Case, host: str, session: str = SESSION) -> bytes:
    headers = {"host": host, **c.headers}
    lines = [f"{c.method} {c.target} HTTP/1.1"]
    lines += [f"{k}: {v.replace(SESSION, session)}" for k, v in headers.items()]
    if c.body or c.method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(c.body)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1", "replace") + c.body


# -- building blocks ----------------------------------------------------------------------------

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


def _head(extra: str = "", *, length: int | None = None) -> bytes:
    """A request head to ``/mcp`` (raw exchanges): JSON in, JSON or SSE out, ``extra`` header lines."""
    lines = ["POST /mcp HTTP/1.1", "host: 127.0.0.1", "content-type: application/json", f"accept: {ACCEPT}"]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


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


def _bases(rng: random.Random) -> tuple[dict[str, str], dict[str, Any]]:
    """A valid request and its headers, to mutate: modern calls and lists, legacy requests in the
    live session. Never ``initialize``: a mutation that stays valid would open a session, and
    100,000 of them would test ``max_sessions`` instead of the parser."""
    pick = rng.randrange(6)
    if pick == 0:
        return modern_headers("tools/call", "server_status"), _valid_call(rng)
    if pick == 1:
        return modern_headers("tools/list"), _request("tools/list", {"_meta": modern_meta()}, rng.randrange(1000))
    if pick == 2:
        return modern_headers("resources/read", "triomcp://status"), _request(
            "resources/read", {"uri": "triomcp://status", "_meta": modern_meta()}, "r")
    if pick == 3:
        return legacy_headers(SESSION), _request("tools/call", {"name": "server_status", "arguments": {}}, 7)
    if pick == 4:
        return legacy_headers(SESSION), _request("ping", None, "p")
    return legacy_headers(SESSION), {"jsonrpc": "2.0", "method": "notifications/progress",
                                     "params": {"progressToken": 1, "progress": 0.5}}


# -- the kinds ---------------------------------------------------------------------------------

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


def _mutated_json(rng: random.Random, limit: int) -> Case:
    headers, message = _bases(rng)
    return Case("mutated-json", headers=headers, body=mutate_bytes(rng, json.dumps(message).encode()))


def _mutated_value(rng: random.Random, limit: int) -> Case:
    headers, message = _bases(rng)
    return Case("mutated-value", headers=headers, body=dumps(rng, replace_somewhere(rng, message)))


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
    if rng.random() < 0.2:
        headers["expect"] = "100-continue"
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


KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH")


def _http_method(rng: random.Random, limit: int) -> Case:
    method = rng.choice(["PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "GET", "DELETE", "CONNECT", "BREW", "post"])
    return Case("http-method", method=method, headers=_maybe_modern(rng), body=b"{}" if method in ("PUT", "PATCH")
                else b"", unimplemented=method not in KNOWN_METHODS)


def _target(rng: random.Random, limit: int) -> Case:
    target = rng.choice(["/mcp/", "/MCP", "/mcp?x=1", "//mcp", "/mcp#f", "*", "http://127.0.0.1/mcp", "/mcp%00",
                         "/%2e%2e/mcp", "/./mcp", "/mcp/../mcp", "/metrics", "/readyz", "/healthz", "/",
                         "/.well-known/oauth-protected-resource", "/" + "a" * 8000, "/mcp?" + "&".join(["a=1"] * 500)])
    return Case("target", target=target, headers=modern_headers("tools/call", "server_status"),
                body=json.dumps(_valid_call(rng)).encode())


def _host_origin(rng: random.Random, limit: int) -> Case:
    headers = modern_headers("tools/call", "server_status")
    if rng.random() < 0.5:
        headers["host"] = rng.choice(["evil.example", "", "127.0.0.1:99999", "[::1]", "localhost.", "127.0.0.2",
                                      "127.0.0.1, evil.example", "xn--80ak6aa92e.com", "LOCALHOST", "[::ffff:127.0.0.1]"])
    else:
        headers["origin"] = rng.choice(["http://evil.example", "null", "http://localhost:1", "http://127.0.0.1",
                                        "file://", "", "http://localhost.evil.example", "https://[::1]:443"])
    return Case("host-origin", headers=headers, body=json.dumps(_valid_call(rng)).encode())


def _oversized_headers(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    if rng.random() < 0.5:  # one huge header line
        lines = [f"x-big: {'a' * rng.choice([20_000, 70_000, 200_000])}"]
    else:  # very many headers
        lines = [f"x-h{i}: {'b' * 100}" for i in range(rng.choice([200, 1000, 3000]))]
    return Case("oversized-headers", raw=(_head("".join(f"{line}\r\n" for line in lines), length=len(body)), body))


def _header_lines(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    odd = rng.choice([b"x-a: b\x00c", b"x-a: b\rc", b" folded: continuation", b"\tfolded", b"no-colon-line",
                      b": no-name", b"x" * 9000 + b": v", b"content-length: 1, 2", b"content-length: +5",
                      b"content-length: 0x10", b"content-length: 99999999999999999999", b"transfer-encoding: gzip",
                      b"transfer-encoding: chunked, identity", b"host: a", b"\xff\xfe: v", b"x-a: \xff\xfe",
                      b"mcp-protocol-version: \x00", b"content-type: application/json\r\ncontent-type: text/plain",
                      b"x-a : spaced", b"x-a:\x0b", b"connection: upgrade\r\nupgrade: websocket", b"expect: 100-fail"])
    head = _head(length=len(body)).replace(b"\r\n\r\n", b"\r\n" + odd + b"\r\n\r\n", 1)
    return Case("header-lines", raw=(head, body), unimplemented=odd.startswith(b"transfer-encoding"))


def _chunked(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    head = _head("transfer-encoding: chunked\r\n")
    style = rng.randrange(8)
    if style == 0:  # valid, one byte per chunk
        chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    elif style == 1:  # chunk extensions and a trailer
        chunks = b"%x;ext=1;q=\"x\"\r\n" % len(body) + body + b"\r\n0\r\nx-trailer: 1\r\n\r\n"
    elif style == 2:  # upper-case hex, leading zeros
        chunks = b"%08X\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    elif style == 3:  # a size that overflows any integer
        chunks = b"f" * rng.choice([17, 40, 300]) + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif style == 4:  # the chunk is longer than its size says
        chunks = b"%x\r\n" % (len(body) // 2) + body + b"\r\n0\r\n\r\n"
    elif style == 5:  # no final chunk
        chunks = b"%x\r\n" % len(body) + body + b"\r\n"
    elif style == 6:  # negative, spaced, empty sizes
        chunks = rng.choice([b"-5", b" 5", b"5 ", b"", b"0x5"]) + b"\r\n" + body[:5] + b"\r\n0\r\n\r\n"
    else:  # a valid chunked body of a mutated message
        mutated = mutate_bytes(rng, body)
        chunks = b"%x\r\n" % len(mutated) + mutated + b"\r\n0\r\n\r\n"
    return Case("chunked", raw=(head, chunks))


def _pipelined(rng: random.Random, limit: int) -> Case:
    """2-4 well-framed requests in one write: valid calls and bad ones; each must get its answer."""
    makers = [_wrong_shape, _truncated_json, _raw_json, _mutated_json, _protocol_version, _accept]
    parts: list[bytes] = []
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.4:
            headers, body = modern_headers("tools/call", "server_status"), json.dumps(_valid_call(rng)).encode()
            parts.append(_request_bytes(Case("valid", headers=headers, body=body), "127.0.0.1"))
        else:
            parts.append(_request_bytes(rng.choice(makers)(rng, limit), "127.0.0.1"))
    return Case("pipelined", raw=(b"".join(parts),), requests=len(parts))


def _oversized_body(rng: random.Random, limit: int) -> Case:
    size = limit + rng.choice([1, 1000, limit])
    if rng.random() < 0.5:
        return Case("oversized-body", headers=_maybe_modern(rng), body=b"{" + b" " * (size - 2) + b"}")
    # chunked, so the server cannot refuse it from the content-length alone
    chunk = b" " * 16384
    parts = [_head("transfer-encoding: chunked\r\n")]
    for _ in range(size // len(chunk) + 1):
        parts.append(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return Case("oversized-body-chunked", raw=tuple(parts))


def _slow_body(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    head = _head(f"mcp-protocol-version: {MODERN}\r\nmcp-method: tools/call\r\nmcp-name: server_status\r\n",
                 length=len(body))
    pieces = [body[i : i + 16] for i in range(0, len(body), 16)]
    return Case("slow-body", raw=(head, *pieces), drip=rng.choice([0.01, 0.03]))


def _truncated_body(rng: random.Random, limit: int) -> Case:
    body = json.dumps(_valid_call(rng)).encode()
    cut = rng.randrange(0, len(body))
    head = _head(length=len(body))
    if rng.random() < 0.3:  # the head itself cut short
        return Case("truncated-head", raw=(head[: rng.randrange(1, len(head))],))
    return Case("truncated-body", raw=(head, body[:cut]))


def _junk_request_line(rng: random.Random, limit: int) -> Case:
    # Not the HTTP/2 preface (``PRI * HTTP/2.0``): Hypercorn answers it in HTTP/2 (cleartext, prior
    # knowledge), which this HTTP/1.1 fuzzer does not read.
    line = rng.choice([b"GARBAGE\r\n\r\n", b"POST /mcp HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                       b"POST /mcp HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
                       b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nabcde",
                       b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                       b"GET /" + b"a" * 50_000 + b" HTTP/1.1\r\n\r\n",
                       b"GET /mcp HTTP/1.0\r\n\r\n", b"GET /mcp\r\n\r\n", b"\r\n\r\n\r\n", rng.randbytes(300),
                       mutate_bytes(rng, _head(length=2) + b"{}")])
    return Case("junk-request", raw=(line,))


def _legacy_session_garbage(rng: random.Random, limit: int) -> Case:
    headers = legacy_headers(SESSION)
    body = rng.choice([rng.randbytes(64), json.dumps(rng.choice(SHAPES)).encode(), b"{",
                       json.dumps(_request("tools/call", {"name": "server_status", "arguments": {}})).encode(),
                       dumps(rng, {"jsonrpc": "2.0", "id": odd_value(rng), "method": "tools/list"})])
    return Case("legacy-session", headers=headers, body=body)


def _regression(rng: random.Random, limit: int) -> Case:
    shape = rng.choice(REGRESSIONS)
    body = json.dumps(shape).encode()  # "\udfff" stays an escape: valid JSON, a lone surrogate once parsed
    return Case("regression", headers=modern_headers(str(shape["method"])), body=body)


MAKERS: list[Callable[[random.Random, int], Case]] = [
    _random_bytes, _truncated_json, _wrong_shape, _raw_json, _mutated_json, _mutated_value, _huge_params,
    _deep_nesting, _content_type, _accept, _session_id, _last_event_id, _protocol_version, _modern_mismatch,
    _http_method, _target, _host_origin, _oversized_headers, _header_lines, _chunked, _pipelined, _oversized_body,
    _slow_body, _truncated_body, _junk_request_line, _legacy_session_garbage, _mutated_json, _mutated_value,
    _regression,
]
"""One maker per slot: input ``i`` comes from ``MAKERS[i % len(MAKERS)]`` (the two mutators twice)."""


def case(seed: int, index: int, max_body_bytes: int) -> Case:
    """Input ``index`` of ``seed``: the same bytes on every machine, alone or in a run."""
    rng = rng_for("http", seed, index)
    made = MAKERS[index % len(MAKERS)](rng, max_body_bytes)
    return dataclasses.replace(made, seed=seed, index=index)


def generate(n: int, seed: int, max_body_bytes: int, *, start: int = 0) -> Iterator[Case]:
    """Inputs ``start`` to ``start + n - 1`` of ``seed``, made one at a time (a run of 100,000
    never holds them all)."""
    for index in range(start, start + n):
        yield case(seed, index, max_body_bytes)
