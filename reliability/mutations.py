"""What both fuzzers draw inputs from: a random source per input, byte mutations, odd JSON values.

Every fuzz input is a pure function of ``(fuzzer, seed, index)``: :func:`rng_for` seeds one
``random.Random`` from exactly those (a string seed, hashed with SHA-512 by ``random``, so the
same on every machine and every Python run, whatever ``PYTHONHASHSEED``), and nothing else feeds
the generators. Input 41,234 of seed 7 is the same bytes whether it is generated alone or after
the 41,233 before it. No I/O here.
"""

from __future__ import annotations

import json
import random
from typing import Any

__all__ = ["INTERESTING_BYTES", "dumps", "mutate_bytes", "odd_value", "replace_somewhere", "rng_for"]

INTERESTING_BYTES = b'"{}[]:,\\\x00\x7f\xff\xc0\xed\xa0\x80 \t\r\n0-e.+'
"""Bytes that change how JSON (and UTF-8) reads: quotes, brackets, escapes, NUL, bytes that start
overlong or surrogate UTF-8 sequences, whitespace, number parts."""

ODD_STRINGS = ["", "a", "\x00", "\ud800", "\udfff", "\u202e", "é€𝄞", "\ufeff", "../../etc/passwd", "%s%n%x",
               "${jndi:x}", "\\", "\"", "null", "true", "-0", "1e999", "\r\n", "tools/call", "server_status",
               "2026-07-28", "2025-11-25"]
ODD_NUMBERS: list[Any] = [0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, 0.5, -0.0, 1e308,
                          float("nan"), float("inf"), float("-inf")]


def rng_for(fuzzer: str, seed: int, index: int) -> random.Random:
    """The random source of input ``index`` of ``seed`` for ``fuzzer`` (``http``, ``p2p``)."""
    return random.Random(f"{fuzzer}:{seed}:{index}")


def mutate_bytes(rng: random.Random, data: bytes, *, max_ops: int = 4) -> bytes:
    """``data`` with 1 to ``max_ops`` byte-level edits: a bit flipped, an interesting byte put in
    or over, random bytes inserted, a span deleted or repeated, the end cut off."""
    out = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        if not out:
            out += rng.randbytes(rng.randint(1, 8))
            continue
        at = rng.randrange(len(out))
        op = rng.randrange(7)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.choice(INTERESTING_BYTES)
        elif op == 2:
            out[at:at] = bytes([rng.choice(INTERESTING_BYTES)])
        elif op == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:
            del out[at : at + rng.randint(1, 16)]
        elif op == 5:
            span = out[at : at + rng.randint(1, 32)]
            out[at:at] = span * rng.randint(1, 8)
        else:
            del out[at:]
    return bytes(out)


def odd_value(rng: random.Random, depth: int = 2) -> Any:
    """A JSON value meant to surprise a parser or a schema: odd strings and numbers, wrong types,
    empty and nested containers (``depth`` levels at most)."""
    pick = rng.randrange(8 if depth > 0 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice(ODD_NUMBERS)
    if pick == 3:
        return rng.choice(ODD_STRINGS)
    if pick == 4:
        return rng.choice(["x" * rng.choice([100, 5000]), rng.randbytes(rng.randint(1, 24)).decode("latin-1")])
    if pick == 5:
        return [odd_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if pick == 6:
        return {rng.choice([*ODD_STRINGS, "id", "method", "params", "_meta", "name"]): odd_value(rng, depth - 1)
                for _ in range(rng.randint(0, 3))}
    return [] if rng.random() < 0.5 else {}


def replace_somewhere(rng: random.Random, value: Any) -> Any:
    """A copy of ``value`` (decoded JSON) with one node replaced by an :func:`odd_value`, one key
    renamed, or one key removed: a structurally valid message with one thing wrong."""
    if not isinstance(value, dict | list) or not value or rng.random() < 0.2:
        return odd_value(rng)
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    if isinstance(copy, dict):
        key = rng.choice(sorted(copy))
        action = rng.randrange(4)
        if action == 0:
            del copy[key]
        elif action == 1:
            copy[rng.choice(ODD_STRINGS)] = copy.pop(key)
        else:
            copy[key] = replace_somewhere(rng, copy[key])
    else:
        at = rng.randrange(len(copy))
        copy[at] = replace_somewhere(rng, copy[at])
    return copy


def dumps(rng: random.Random, value: Any) -> bytes:
    """``value`` as JSON bytes, ASCII-escaped or raw UTF-8 at random; a lone surrogate in a raw
    string becomes the bytes of its UTF-8-like encoding (invalid UTF-8, as a hostile peer sends)."""
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")
