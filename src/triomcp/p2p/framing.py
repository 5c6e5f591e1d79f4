"""Frames of MCP over libp2p: a u32 big-endian length, then that many bytes of UTF-8 JSON.

Sans-I/O: feed bytes to a :class:`FrameDecoder`, get messages or frame errors back.
A frame error never ends the stream by itself: the decoder skips exactly the bad
frame (an oversized one is discarded as it streams past, never buffered) and the
next frame decodes normally. Only a length beyond the hard cap, where skipping
would mean reading an absurd amount, is fatal (:class:`FatalFrameError`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from triomcp.errors import FrameError, InvalidRequest, ParseError

__all__ = ["FatalFrameError", "FrameDecoder", "FrameIssue", "encode_frame"]

HEADER = struct.Struct(">I")
HARD_CAP = 64 * 1024 * 1024


class FatalFrameError(FrameError):
    """The stream cannot continue: a length prefix beyond the hard cap, or data ended mid-frame."""


@dataclass(frozen=True, slots=True)
class FrameIssue:
    """A frame that was skipped; ``code`` is the JSON-RPC error code to answer with."""

    code: int
    message: str


def encode_frame(message: dict[str, Any]) -> bytes:
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        body = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (from a hostile peer's id): escape it, stay valid UTF-8
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode()
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    def __init__(self, max_frame_bytes: int = 1024 * 1024, hard_cap: int = HARD_CAP) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.hard_cap = hard_cap
        self._buffer = bytearray()
        self._skip = 0

    @property
    def mid_frame(self) -> bool:
        """True when bytes of an unfinished frame are pending (an EOF now is a truncation)."""
        return bool(self._buffer) or self._skip > 0

    def feed(self, data: bytes) -> list[dict[str, Any] | FrameIssue]:
        """Messages and issues, in order, for every frame completed by ``data``."""
        out: list[dict[str, Any] | FrameIssue] = []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buffer += data
        while True:
            if self._skip:
                dropped = min(self._skip, len(self._buffer))
                del self._buffer[:dropped]
                self._skip -= dropped
                if self._skip:
                    break
            if len(self._buffer) < HEADER.size:
                break
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.hard_cap:
                raise FatalFrameError(f"frame length {length} is beyond the hard cap {self.hard_cap}")
            if length > self.max_frame_bytes:
                del self._buffer[: HEADER.size]
                self._skip = length
                out.append(FrameIssue(InvalidRequest.jsonrpc_code,
                                      f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"))
                continue
            if len(self._buffer) < HEADER.size + length:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            out.append(self._decode(body))
        return out

    def end(self) -> None:
        """The stream ended: raise if it ended in the middle of a frame."""
        if self.mid_frame:
            raise FatalFrameError("the stream ended in the middle of a frame")

    @staticmethod
    def _decode(body: bytes) -> dict[str, Any] | FrameIssue:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return FrameIssue(ParseError.jsonrpc_code, "frame is not valid UTF-8")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return FrameIssue(ParseError.jsonrpc_code, "frame is not valid JSON")
        if not isinstance(value, dict):
            return FrameIssue(InvalidRequest.jsonrpc_code, "frame must hold one JSON-RPC object")
        return value
