"""The libp2p frame fuzzer's inputs: each a pure function of ``(seed, index)`` (no I/O here).

A frame is a u32 big-endian length and that many bytes (``/triomcp/mcp/1.0.0``). Inputs are
sent in streams of :data:`STREAM_INPUTS`: input ``index`` goes on stream ``index //
STREAM_INPUTS``, and the last input of each stream is an *ending* (how the stream ends: cut
mid-frame, a length beyond the hard cap, a reset with requests in flight, lengths that lie...).
Every other input is one well-framed frame after which the stream must stay usable; its kind
is ``KINDS[index % len(KINDS)]``.

:func:`answers_owed` says how many replies JSON-RPC 2.0 owes a frame: one, except a
notification (an object with a ``method`` and no ``id``), which gets none.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.mcp_http import tool_call
from reliability.mutations import dumps, mutate_bytes, odd_value, replace_somewhere, rng_for
from triomcp.mcp.results import modern_meta

__all__ = ["KINDS", "REGRESSIONS", "STREAM_INPUTS", "FrameInput", "answers_owed", "frame", "frame_input", "probe"]

STREAM_INPUTS = 50
HARD_CAP = 64 * 1024 * 1024
"""The length beyond which a node ends the stream instead of skipping the frame."""


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def probe(ident: str) -> bytes:
    """A valid modern ``tools/call`` of ``server_status``: its answer shows the stream still works."""
    return frame(json.dumps(tool_call("server_status", {}, ident, meta=modern_meta())).encode())


@dataclass(frozen=True)
class FrameInput:
    seed: int
    index: int
    kind: str
    data: bytes
    """The bytes written."""
    ending: str = ""
    """``""``: a frame the stream survives. Otherwise how the stream ends after it: ``eof`` (the
    fuzzer closes its side; the node must close too), ``node`` (the node must end the stream
    itself), ``reset`` (the fuzzer resets it at once)."""
    owed: int = 0
    """Replies the node owes this input (JSON-RPC 2.0; for endings: replies before the end)."""
    ident: Any = None
    """The ``id`` of a request input (to match its reply), else None."""

    @property
    def ref(self) -> str:
        return f"{self.seed}:{self.index}"


def answers_owed(body: bytes, max_frame_bytes: int) -> tuple[int, Any]:
    """(replies owed, request id) for a frame holding ``body``: a frame that is too big, not UTF-8,
    not JSON, not an object, or an object with an ``id`` (whatever its method, a
    ``notifications/cancelled`` too) gets one reply; a notification none."""
    if len(body) > max_frame_bytes:
        return 1, None
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return 1, None
    if isinstance(value, dict) and "method" in value and "id" not in value:
        return 0, None
    ident = value.get("id") if isinstance(value, dict) else None
    return 1, ident if isinstance(ident, str | int) and not isinstance(ident, bool) else None


WRONG_SHAPES: list[Any] = [
    {}, {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"}, {"jsonrpc": "2.0", "id": 7, "method": 7},
    {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": [1]},
    {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": 5}},
    {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "nope", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 11, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
    {"jsonrpc": "2.0", "id": 12, "method": "no/such/method"}, {"jsonrpc": "2.0", "id": 13, "result": {}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": [1]},
    {"jsonrpc": "2.0", "method": "notifications/whatever", "params": 5},
    {"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": {"name": "server_status", "_meta": []}},
    {"jsonrpc": "2.0", "id": "\udfff", "method": "ping"},
    {"jsonrpc": "2.0", "id": 15, "method": "notifications/initialized"},
    [{"jsonrpc": "2.0", "id": 16, "method": "tools/list"}], [],
]

REGRESSIONS: list[Any] = [
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}},
    {"jsonrpc": "2.0", "id": "\udfff", "method": "ping"},
]
"""Frames that once killed the stream: an unhashable ``requestId`` raised in ``serve_stream``; a lone
surrogate in an id made the reply unencodable, and ``send`` marked the stream broken."""


def _bases(rng: random.Random) -> dict[str, Any]:
    """A valid modern request to mutate (only tools that read: no task is submitted, no peer dialled)."""
    ident: Any = rng.choice([rng.randrange(10_000), f"m{rng.randrange(10_000)}"])
    meta = modern_meta()
    return rng.choice([
        tool_call("server_status", {}, ident, meta=meta),
        {"jsonrpc": "2.0", "id": ident, "method": "tools/list", "params": {"_meta": meta}},
        {"jsonrpc": "2.0", "id": ident, "method": "resources/list", "params": {"_meta": meta}},
        {"jsonrpc": "2.0", "id": ident, "method": "prompts/list", "params": {"_meta": meta}},
        {"jsonrpc": "2.0", "id": ident, "method": "server/discover", "params": {"_meta": meta}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ident}},
    ])


# -- frames the stream must survive ---------------------------------------------------------------

def _invalid_utf8(rng: random.Random, limit: int) -> bytes:
    return frame(rng.choice([b'{"a":"\xff\xfe"}', b'{"id":1,"method":"\xc0\xaf"}', b'{"x":"\xed\xa0\x80"}',
                             b"\xf8\x88\x80\x80\x80", b'{"a":"\xe2\x82"}']))


def _invalid_json(rng: random.Random, limit: int) -> bytes:
    return frame(rng.choice([b"{nope", b"", b"{", b'{"a":1,}', b"\x00", b"NaN", b'{"a":1}{"b":2}', b"\xef\xbb\xbf{}",
                             json.dumps(_bases(rng)).encode()[: rng.randrange(1, 40)]]))


def _not_an_object(rng: random.Random, limit: int) -> bytes:
    return frame(rng.choice([b"[1,2]", b"42", b'"s"', b"null", b"[]", b"true", b"-0", b"1e999"]))


def _deep_json(rng: random.Random, limit: int) -> bytes:
    depth = rng.choice([1000, 10_000, limit // 2])
    if rng.random() < 0.5:
        return frame(b"[" * depth + b"]" * depth)
    return frame((b'{"a":' * depth + b"1" + b"}" * depth)[:limit])


def _wrong_shape(rng: random.Random, limit: int) -> bytes:
    return frame(json.dumps(rng.choice(WRONG_SHAPES)).encode("utf-8", "surrogatepass"))


def _regression(rng: random.Random, limit: int) -> bytes:
    return frame(json.dumps(rng.choice(REGRESSIONS)).encode("utf-8", "surrogatepass"))


def _oversized(rng: random.Random, limit: int) -> bytes:
    size = limit + rng.choice([1, 100, limit])
    return frame(rng.randbytes(size) if rng.random() < 0.5 else b" " * size)


def _random_bytes(rng: random.Random, limit: int) -> bytes:
    return frame(rng.randbytes(rng.randrange(1, 512)))


def _mutated_bytes(rng: random.Random, limit: int) -> bytes:
    return frame(mutate_bytes(rng, json.dumps(_bases(rng)).encode()))


def _mutated_value(rng: random.Random, limit: int) -> bytes:
    return frame(dumps(rng, replace_somewhere(rng, _bases(rng))))


def _odd_id(rng: random.Random, limit: int) -> bytes:
    message = _bases(rng)
    message["id"] = odd_value(rng)
    return frame(dumps(rng, message))


def _big_valid(rng: random.Random, limit: int) -> bytes:
    """A valid call just under the limit: big arguments the tool does not take."""
    message = tool_call("server_status", {"blob": ""}, rng.randrange(1000), meta=modern_meta())
    room = limit - len(json.dumps(message).encode()) - rng.randrange(0, 64)
    message["params"]["arguments"]["blob"] = "x" * max(room, 0)
    return frame(json.dumps(message).encode())


def _duplicate_ids(rng: random.Random, limit: int) -> bytes:
    """Several requests with one id in one write: one answer each ("already in flight" or a result)."""
    ident = rng.randrange(100)
    return b"".join(frame(json.dumps(tool_call("server_status", {}, ident, meta=modern_meta())).encode())
                    for _ in range(rng.randint(2, 5)))


KIND_MAKERS: list[Callable[[random.Random, int], bytes]] = [
    _invalid_utf8, _invalid_json, _not_an_object, _deep_json, _wrong_shape, _regression, _oversized,
    _random_bytes, _mutated_bytes, _mutated_value, _odd_id, _big_valid, _duplicate_ids, _mutated_bytes,
    _mutated_value,
]
KINDS = [m.__name__.strip("_").replace("_", "-") for m in KIND_MAKERS]


# -- endings ------------------------------------------------------------------------------------

def _ending(rng: random.Random, limit: int) -> tuple[str, bytes, str, int]:
    """(kind, bytes, ending, replies owed before the end)."""
    valid = json.dumps(_bases(rng)).encode()
    pick = rng.randrange(7)
    if pick == 0:
        return "end-beyond-hard-cap", struct.pack(">I", rng.choice([HARD_CAP + 1, 0xFFFFFFFF])), "node", 1
    if pick == 1:
        return "end-truncated-frame", frame(valid)[: rng.randrange(5, len(valid) + 4)], "eof", 0
    if pick == 2:
        return "end-cut-length", struct.pack(">I", 100)[: rng.randrange(1, 4)], "eof", 0
    if pick == 3:  # an oversized frame being skipped when the stream ends
        return "end-mid-skip", struct.pack(">I", limit + 1000) + rng.randbytes(rng.randrange(0, limit)), "eof", 1
    if pick == 4:  # a length that lies: the rest of the bytes are read as the next frame's length
        body = valid + rng.randbytes(rng.randrange(0, 64))
        return "end-lying-length", struct.pack(">I", rng.randrange(0, len(body))) + body, "eof", 0
    if pick == 5:  # requests in flight, then a reset
        calls = b"".join(frame(json.dumps(tool_call("server_status", {}, f"r{i}", meta=modern_meta())).encode())
                         for i in range(rng.randint(1, 20)))
        return "end-reset-in-flight", calls, "reset", 0
    return "end-clean", b"", "eof", 0


def frame_input(seed: int, index: int, max_frame_bytes: int) -> FrameInput:
    """Input ``index`` of ``seed``: the same bytes on every machine, alone or in a run."""
    rng = rng_for("p2p", seed, index)
    if index % STREAM_INPUTS == STREAM_INPUTS - 1:
        kind, data, ending, owed = _ending(rng, max_frame_bytes)
        return FrameInput(seed, index, kind, data, ending=ending, owed=owed)
    maker = KIND_MAKERS[index % len(KIND_MAKERS)]
    data = maker(rng, max_frame_bytes)
    owed, ident = 0, None
    at = 0
    while at + 4 <= len(data):  # one or more whole frames
        (length,) = struct.unpack_from(">I", data, at)
        one, ident = answers_owed(data[at + 4 : at + 4 + length], max_frame_bytes)
        owed += one
        at += 4 + length
    return FrameInput(seed, index, KINDS[index % len(KINDS)], data, owed=owed, ident=ident)
