"""Every yamux frame reaches the wire whole, even when the task writing it is cancelled (py-libp2p 0.8.1).

**The defect** (docs/reliability.md, "Defects found", 2): a peer that resets streams while the
node is blocked writing their answers killed the whole connection. Resetting a stream cancels
the requests served on it, and one of them is usually in the middle of writing its answer. In
py-libp2p 0.8.1 a yamux frame (header and body, at most 12 + 65,524 bytes, built whole in
``YamuxStream.write``) goes to the connection in one ``Yamux._write_frame`` ->
``secured_conn.write`` (``stream_muxer/yamux/yamux.py:874-875``) -> ``SecureSession.write``
(``security/secure_session.py:142-143``) -> ``BaseNoiseMsgReadWriter.write_msg``
(``security/noise/io.py:59-79``), which **encrypts first** (the nonce is counted) and then
awaits the write of the length-prefixed ciphertext: ``RawConnection.write`` ->
``TrioTCPStream.write`` (``io/trio.py:30-34``), a lock, then ``SocketStream.send_all``. A cancel
can land at three checkpoints after the nonce is spent:

- the lock (``io/trio.py:32``): Trio's ``Lock.acquire`` is a checkpoint even when the lock is
  free, so the cancel is delivered there and nothing is sent;
- ``send_all`` waiting for room in the socket (Trio loops over ``socket.send``): nothing, or
  part of the message, is sent;
- between the Noise messages of a frame over 65,519 bytes (``security/noise/io.py:27``,
  ``72-79``): yamux's largest frame, 65,536 bytes, goes as two Noise messages, and a cancel
  after the first cuts the frame after its header and 65,507 bytes of its body.

In each case the peer decrypts the next message with a nonce the sender has already passed, and
gets ``NoiseInvalidMessage("Failed authentication of message")`` (``noise/connection.py:145``),
or takes the next frame's bytes for the rest of a body: either way it tears the connection down,
with every other stream and call on it. Measured with the strict xfail that pinned the defect
(30 streams of 60 ``tools/list``, the client stops reading, resets them), with the node's writes
instrumented: three runs out of three lost the connection, and in each exactly one write was
cancelled inside ``write_msg`` -- a 26 KB ``tools/list`` answer frame, its nonce spent, 0 of its
bytes sent: once at the lock, twice in ``send_all``. (One is enough; the other cancelled writers
were still waiting for yamux's write lock, before anything was encrypted, which is harmless.)
With this module the test passes; in two instrumented runs 7 frame writes had their task
cancelled meanwhile, each finished whole (in 1-7 ms) before the cancel was delivered. Reads are
not affected: only yamux's reader task reads the secured connection, and it is cancelled only
when the connection ends.

**The fix** is at the one point every frame passes: the ``write`` of each yamux connection's
secured connection. :class:`WholeFrames` runs each write under a shield with its own deadline,
:data:`FRAME_WRITE_SECONDS` (10 s, the ``ConnectionWriteTimeout`` of hashicorp's and libp2p's Go
yamux): once a frame is started it is finished, and a cancel that came meanwhile is delivered
as soon as it is (the request's work stops there; the reset still ends it). If the deadline
passes, the peer has not taken 64 KiB in 10 s and the connection cannot carry another frame:
it is closed (a stuck peer must not hold the node), yamux's reader sees the end and closes every
stream, and that write and every later one raise ``ConnectionClosedError``. Once the connection
begins to close (:meth:`WholeFrameYamux.close`) nothing is to follow what is written, so writes
are no longer shielded (the caller's deadline holds again); a close cut short while a frame is
stuck closes the connection at once.

**Where**: py-libp2p's ``MuxerMultistream.new_conn`` builds ``Yamux`` by name
(``stream_muxer/muxer_multistream.py:139-148``), whatever class the host's ``muxer_opt`` gives,
so :func:`apply` rebinds that one name to :class:`WholeFrameYamux` (as ``hardening.py`` rebinds
``read_delim``), and ``host.py`` names it in ``muxer_opt`` as well. Nothing is copied from the
library. Delete this module once py-libp2p's writes survive cancellation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import ISecureConn
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.id import ID
from libp2p.stream_muxer import muxer_multistream
from libp2p.stream_muxer.yamux.yamux import GO_AWAY_NORMAL, Yamux

from triomcp.p2p._errors import close_quietly

__all__ = ["FRAME_WRITE_SECONDS", "WholeFrameYamux", "WholeFrames", "apply", "is_applied"]

log = logging.getLogger("triomcp.p2p")

FRAME_WRITE_SECONDS = 10.0
"""The longest one frame may take to reach the socket before the connection is closed."""


class WholeFrames:
    """The writes of one secured connection, each one finished once started, or the connection closed.

    Built on ``conn``, it takes the place of ``conn.write`` (an instance attribute shadowing the
    method, as ``flow.py`` does for one stream's window updates)."""

    def __init__(self, conn: ISecureConn, *, seconds: float = FRAME_WRITE_SECONDS, peer: str = "") -> None:
        self.seconds = seconds
        self.ending = False
        """The connection is closing: what is written now is followed by nothing, and may be cut."""
        self.broken: str | None = None
        """Why the connection can carry no more frames (it has been closed), or None."""
        self._conn = conn
        self._write = conn.write
        self._peer = peer[:16]
        self._writing: set[trio.CancelScope] = set()
        setattr(conn, "write", self.write)  # noqa: B010 - this connection only

    async def write(self, data: bytes) -> None:
        """Write one frame whole: once started, no cancel cuts it (until the connection is closing)."""
        if self.broken is not None:
            raise ConnectionClosedError(self.broken)
        with trio.move_on_after(self.seconds, shield=not self.ending) as scope:
            self._writing.add(scope)
            try:
                await self._write(data)
            finally:
                self._writing.discard(scope)
        if scope.cancelled_caught:
            if self.broken is None:
                log.warning("peer %s: a frame took over %g s to write: closing the connection", self._peer,
                            self.seconds)
            await self.abort(f"a frame took over {self.seconds:g} s to write")
            raise ConnectionClosedError(self.broken or "closed")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancel that came meanwhile: now that the frame is whole

    async def abort(self, reason: str) -> None:
        """The connection can carry no more frames: cut any write in progress and close it."""
        first = self.broken is None
        if first:
            self.broken = reason
        for scope in self._writing:
            scope.cancel()
        if first:
            await close_quietly(self._conn)


class WholeFrameYamux(Yamux):
    """py-libp2p's yamux connection, its frames written whole (:class:`WholeFrames`)."""

    def __init__(self, secured_conn: ISecureConn, peer_id: ID, is_initiator: bool | None = None,
                 on_close: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.whole_frames = WholeFrames(secured_conn, peer=str(peer_id))
        super().__init__(secured_conn, peer_id, is_initiator, on_close)

    async def close(self, error_code: int = GO_AWAY_NORMAL) -> None:
        """Close as yamux does (a frame being written is finished first, its wait cancellable);
        a close cut short, by the caller's deadline say, closes the connection at once."""
        self.whole_frames.ending = True
        closed = False
        try:
            await super().close(error_code)
            closed = True
        finally:
            if not closed:
                await self.whole_frames.abort("the connection's close was cut short")


def is_applied() -> bool:
    return getattr(muxer_multistream, "Yamux", None) is WholeFrameYamux


def apply() -> None:
    """Make every yamux connection py-libp2p builds a :class:`WholeFrameYamux` (idempotent)."""
    if not is_applied():
        setattr(muxer_multistream, "Yamux", WholeFrameYamux)  # noqa: B010 - a module global
        log.debug("yamux frames are written whole (%s)", __name__)
