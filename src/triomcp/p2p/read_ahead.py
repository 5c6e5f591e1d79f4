"""TCP reads of libp2p connections take what the socket has, and hand it out as asked (py-libp2p 0.8.1).

Above the socket, py-libp2p reads in small exact pieces: Noise's 2-byte length prefix, then the
message (``libp2p/io/msgio.py``, ``read_exactly``); multistream-select's varints byte by byte.
Each piece is one ``TrioTCPStream.read`` (``libp2p/io/trio.py``): a ``trio.Lock`` taken and a
``SocketStream.receive_some(n)``, so one ``recv`` system call and two or three trips through Trio's
scheduler (the lock and the receive each checkpoint) for every length prefix and every message.
A yamux frame of an HTTP-over-libp2p answer thus cost its reader four system calls and six
scheduler trips, whatever the frame's size.

:func:`apply` gives ``TrioTCPStream.read`` a buffer: a read the buffer can answer returns from it
at once (no lock, no system call, no checkpoint: there is nothing to wait for); otherwise it
reads what the socket has (up to :data:`READ_AHEAD` bytes, with the library's lock and error
handling) and keeps what the caller did not ask for. Nothing else changes: the bytes, their
order, the end of the stream and every error are the library's. The one reader of a connection
after its upgrade is yamux's reader task; before it, the handshakes read one after another. A
read from the buffer is not a checkpoint, but the buffer holds at most one socket read, so a
reader still checkpoints at least once per ``READ_AHEAD`` bytes.

Measured on a forwarded ``tools/call`` (``bench/relay.py``, docs/performance.md section 6).
Delete this module once py-libp2p buffers its own reads.
"""

from __future__ import annotations

from typing import Any

from libp2p.io.trio import TrioTCPStream

__all__ = ["READ_AHEAD", "apply", "is_applied"]

READ_AHEAD = 65536
"""Bytes asked of the socket when the buffer is empty (one yamux frame is at most 65,548)."""

_ORIGINAL = TrioTCPStream.read
_BUFFER = "_triomcp_read_ahead"


async def _read(self: TrioTCPStream, n: int | None = None) -> bytes:
    buffered: bytes = getattr(self, _BUFFER, b"")
    if buffered:
        return _take(self, buffered, n)
    if n is not None and n == 0:
        return b""
    data = await _ORIGINAL(self, max(READ_AHEAD, n or 0))
    if not data:
        return data
    # Another reader may have kept bytes meanwhile: the library's lock orders the socket reads and
    # each keeps its rest before any other task runs, so those bytes come before these.
    return _take(self, getattr(self, _BUFFER, b"") + data, n)


def _take(stream: Any, data: bytes, n: int | None) -> bytes:
    """``n`` bytes of ``data`` (all of it when ``n`` is None or more), the rest kept for the next read."""
    if n is None or n >= len(data):
        setattr(stream, _BUFFER, b"")
        return data
    setattr(stream, _BUFFER, data[n:])
    return data[:n]


def is_applied() -> bool:
    return TrioTCPStream.read is _read


def apply() -> bool:
    """Buffer every TrioTCPStream's reads from now on (idempotent); True if it was not yet."""
    if is_applied():
        return False
    TrioTCPStream.read = _read  # type: ignore[method-assign]
    return True
