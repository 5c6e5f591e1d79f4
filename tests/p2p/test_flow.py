"""Yamux credit on MCP streams comes back in batches, and big answers still flow past the window."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from tests.p2p.conftest import authorize, node_in
from triomcp.p2p import Node


@pytest.fixture
def window_updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every WINDOW_UPDATE increment sent, by any stream in this process (instrumentation only)."""
    sent: list[int] = []
    original = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    return sent


@contextlib.asynccontextmanager
async def calling(tmp_path: Path, window_updates: list[int]) -> AsyncIterator[tuple[Node, Node]]:
    """A calls B on an open, negotiated MCP stream; the updates counted start from there (no peer
    exchange: its streams, opened once identify has answered, would be counted too)."""
    async with node_in(tmp_path / "a", peer_exchange=False) as a, node_in(tmp_path / "b", peer_exchange=False) as b:
        authorize(b, a)
        authorize(a, b)
        with trio.fail_after(60):
            await a.connect(b.listen_addrs()[0])
            await a.call(b.peer_id, "echo", {"value": 0})
            # The work topic's streams are opened once identify has answered; an idle topic sends nothing.
            assert a.gossip is not None and b.gossip is not None
            for _ in range(400):  # bounded by the fail_after above
                if b.peer_id in a.gossip.mesh_peers() and a.peer_id in b.gossip.mesh_peers():
                    break
                await trio.sleep(0.05)
            await trio.sleep(0.2)
            window_updates.clear()
            yield a, b


async def test_small_calls_send_no_window_updates(tmp_path: Path, window_updates: list[int]) -> None:
    async with calling(tmp_path, window_updates) as (a, b):
        for i in range(100):
            assert await a.call(b.peer_id, "echo", {"value": i}) == {"echo": i}
        # py-libp2p's own rule sends one after every read: at least 200 here (both ends, every frame).
        # (Counted before the nodes close: closing opens goodbye streams of its own.)
        assert window_updates == []


async def test_answers_larger_than_the_window_flow_and_credit_returns(tmp_path: Path,
                                                                     window_updates: list[int]) -> None:
    big = "x" * (600 * 1024)  # one frame is over twice the 256 KiB window
    async with calling(tmp_path, window_updates) as (a, b):
        for _ in range(3):
            assert (await a.call(b.peer_id, "echo", {"value": big}))["echo"] == big
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append((await a.call(b.peer_id, "echo", {"value": f"{i}{big}"}))["echo"])

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
        assert sorted(results) == [f"{i}{big}" for i in range(4)]
        moved = 2 * 7 * len(big)  # each request and each answer crosses once
        assert window_updates, "credit must come back or the sender stalls"
        assert all(u >= DEFAULT_WINDOW_SIZE // 2 for u in window_updates)  # batched, never per read
        assert len(window_updates) <= moved // (DEFAULT_WINDOW_SIZE // 2) + 2
