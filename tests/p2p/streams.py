"""In-memory stand-ins for libp2p streams: ``trio.testing`` memory streams with the face
``triomcp.p2p.rpc.Stream`` names (``read``/``write``/``close``/``reset``), and a raw peer that
speaks frames by hand. No sockets, no libp2p."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from triomcp.p2p.framing import FrameDecoder, encode_frame


class MemoryStream:
    """One end of a ``trio.testing.memory_stream_pair``, as :class:`triomcp.p2p.rpc.Stream`."""

    def __init__(self, stream: trio.StapledStream[Any, Any]) -> None:
        self._stream = stream
        self.resets = 0

    async def read(self, n: int | None = None) -> bytes:
        return bytes(await self._stream.receive_some(n))

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def close(self) -> None:
        """Half-close, as libp2p's does: the other end reads the end of the stream."""
        await self._stream.send_eof()

    async def reset(self) -> None:
        self.resets += 1
        await self._stream.aclose()


def stream_pair() -> tuple[MemoryStream, MemoryStream]:
    left, right = trio.testing.memory_stream_pair()
    return MemoryStream(left), MemoryStream(right)


class RawPeer:
    """The far end of a stream, driven frame by frame (for what a well-behaved end never sends)."""

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder()
        self._ready: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.write(encode_frame(message))

    async def receive(self) -> dict[str, Any]:
        """The next whole message (AssertionError if the stream ends first)."""
        while not self._ready:
            data = await self.stream.read(65536)
            assert data, "the stream ended"
            self._ready += [m for m in self._decoder.feed(data) if isinstance(m, dict)]
        return self._ready.pop(0)
