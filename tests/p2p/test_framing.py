"""The frame codec, synchronously, plus property tests."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triomcp.p2p.framing import FatalFrameError, FrameDecoder, FrameIssue, encode_frame


def test_round_trip_split_anywhere() -> None:
    data = encode_frame({"jsonrpc": "2.0", "id": 1, "method": "x"}) + encode_frame({"a": "é"})
    for cut in range(len(data) + 1):
        decoder = FrameDecoder()
        out = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert out == [{"jsonrpc": "2.0", "id": 1, "method": "x"}, {"a": "é"}]
        assert not decoder.mid_frame


@pytest.mark.parametrize(("body", "code"), [
    (b"\xff\xfe", -32700), (b"{nope", -32700), (b"[1,2]", -32600), (b"42", -32600),
])
def test_bad_frames_are_issues_and_the_next_frame_decodes(body: bytes, code: int) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(struct.pack(">I", len(body)) + body + encode_frame({"ok": 1}))
    assert isinstance(out[0], FrameIssue) and out[0].code == code
    assert out[1] == {"ok": 1}


def test_oversized_frame_is_skipped_without_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    out = decoder.feed(struct.pack(">I", 5000))
    assert isinstance(out[0], FrameIssue) and "exceeds" in out[0].message
    for _ in range(5):
        assert decoder.feed(b"x" * 1000) == []
        assert len(decoder._buffer) == 0
    assert decoder.feed(encode_frame({"ok": 2})) == [{"ok": 2}]


def test_absurd_length_is_fatal_and_truncation_is_detected() -> None:
    with pytest.raises(FatalFrameError):
        FrameDecoder(hard_cap=1000).feed(struct.pack(">I", 10_000))
    decoder = FrameDecoder()
    decoder.feed(encode_frame({"a": 1})[:-2])
    assert decoder.mid_frame
    with pytest.raises(FatalFrameError, match="middle of a frame"):
        decoder.end()


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3), max_size=5),
       st.integers(min_value=1, max_value=50))
def test_any_messages_any_chunking(messages: list[dict[str, object]], chunk: int) -> None:
    data = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out: list[object] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert out == messages


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_frame_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=64, hard_cap=1 << 20)
    try:
        out = decoder.feed(data)
    except FatalFrameError:
        return
    assert all(isinstance(item, (dict, FrameIssue)) for item in out)
