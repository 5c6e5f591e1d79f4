"""The peer exchange's framing (``/triomcp/peers/1.0.0``: one frame each way) over a memory stream.
The exchange itself, between real nodes, is in ``test_node.py``."""

from __future__ import annotations

import trio

from tests.p2p.streams import stream_pair
from triomcp.errors import PeerError
from triomcp.p2p.exchange import read_one_frame
from triomcp.p2p.framing import encode_frame


async def test_read_one_frame_over_a_memory_stream() -> None:
    for sent, error in [
        (encode_frame({"addrs": ["a"]}) + encode_frame({"ignored": True}), None),
        (encode_frame({"addrs": []})[:5], "ended before a whole frame"),
        (b"\x00\x00\x00\x02[]", "a bad frame"),
        (b"\x00\x00\x10\x00" + b"x" * 4096, "a bad frame"),
    ]:
        mine, theirs = stream_pair()
        await theirs.write(sent)
        await theirs.close()
        with trio.fail_after(5):
            try:
                assert await read_one_frame(mine, 1024) == {"addrs": ["a"]} and error is None
            except PeerError as exc:
                assert error is not None and error in str(exc)
