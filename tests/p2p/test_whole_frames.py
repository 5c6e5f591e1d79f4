"""``p2p/whole_frames.py``: a frame's write to the secured connection is never cut half-way.

Two ends of py-libp2p's own Noise session (its handshake, its ``SecureSession``, its
``TrioTCPStream``) over a Unix socket pair with small buffers, in one process: a write blocks
as it would on a full TCP socket. Waits are ``wait_all_tasks_blocked`` and events, each test
bounded; the deadline tests run on ``autojump_clock``. The last test checks that real nodes use it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.abc import ISecureConn
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from noise.exceptions import NoiseInvalidMessage

from tests.p2p.conftest import authorize, node_in
from triomcp.errors import PeerError
from triomcp.p2p import whole_frames
from triomcp.p2p.whole_frames import WholeFrames, WholeFrameYamux

FRAME = bytes(range(256)) * 256  # 65,536 bytes: yamux's largest frame, sent as two Noise messages
BUFFER = 4096


@contextlib.asynccontextmanager
async def noise_pair() -> AsyncIterator[tuple[ISecureConn, ISecureConn]]:
    """(dialer, listener): the two ends of a Noise session over a socket pair with small buffers."""
    left, right = trio.socket.socketpair()
    with left, right:
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        keys = create_new_key_pair(), create_new_key_pair()
        dialer, listener = (NoiseTransport(k, noise_privkey=x25519_key_pair().private_key) for k in keys)
        ends: dict[str, ISecureConn] = {}

        async def dial() -> None:
            raw = RawConnection(TrioTCPStream(trio.SocketStream(left)), initiator=True)
            ends["dialer"] = await dialer.secure_outbound(raw, ID.from_pubkey(keys[1].public_key))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dial)
            raw = RawConnection(TrioTCPStream(trio.SocketStream(right)), initiator=False)
            ends["listener"] = await listener.secure_inbound(raw)
        yield ends["dialer"], ends["listener"]


async def write_then_cancel(nursery: trio.Nursery, writer: ISecureConn) -> tuple[trio.CancelScope, list[str]]:
    """Start writing :data:`FRAME` in a task of ``nursery``, wait until the write is blocked on the
    full socket (part of its first Noise message sent), cancel it. Returns the task's scope and
    what the task did after its write returned."""
    scope = trio.CancelScope()
    after: list[str] = []

    async def write() -> None:
        with scope:
            await writer.write(FRAME)
            after.append("went on after its write")

    nursery.start_soon(write)
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    return scope, after


async def test_a_write_cancelled_half_way_goes_out_whole_then_its_task_stops() -> None:
    with trio.fail_after(10):
        async with noise_pair() as (reader, writer):
            WholeFrames(writer)
            async with trio.open_nursery() as nursery:
                scope, after = await write_then_cancel(nursery, writer)
                assert await reader.read(len(FRAME)) == FRAME  # the rest came once the reader read
            assert scope.cancelled_caught  # the cancel was delivered as the write returned...
            assert after == []  # ...so the task did nothing more
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.write, FRAME)
                assert await reader.read(len(FRAME)) == FRAME  # the next frame: the Noise stream is in step


async def test_without_it_py_libp2p_puts_the_noise_stream_out_of_step() -> None:
    """The defect itself, in py-libp2p 0.8.1: a cancelled write leaves part of a Noise message on
    the wire, its nonce spent; the reader fails on the next frame. (When this fails, py-libp2p's
    writes survive cancellation: whole_frames.py can go.)"""
    with trio.fail_after(10):
        async with noise_pair() as (reader, writer), trio.open_nursery() as nursery:
            await write_then_cancel(nursery, writer)
            nursery.start_soon(writer.write, FRAME)  # the next frame
            with pytest.raises(NoiseInvalidMessage, match="Failed authentication of message"):
                await reader.read(len(FRAME))
            nursery.cancel_scope.cancel()


async def test_a_write_past_its_deadline_closes_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with noise_pair() as (reader, writer):
        frames = WholeFrames(writer, seconds=10)
        start = trio.current_time()
        with pytest.raises(ConnectionClosedError, match="took over 10 s"):
            await writer.write(FRAME)  # the reader never reads
        assert trio.current_time() - start == pytest.approx(10)
        assert frames.broken is not None
        with pytest.raises(ConnectionClosedError, match="took over 10 s"):
            await writer.write(b"x")  # at once: the connection carries no more frames
        assert trio.current_time() - start == pytest.approx(10)
        with pytest.raises(IncompleteReadError):  # the peer sees the connection end
            await reader.read(len(FRAME))


async def test_a_close_cut_short_while_a_frame_is_stuck_closes_the_connection_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    async with noise_pair() as (reader, writer):
        muxed = WholeFrameYamux(writer, ID.from_pubkey(create_new_key_pair().public_key))
        failed: list[Exception] = []

        async def stuck() -> None:
            try:
                await muxed._write_frame(FRAME)  # as a stream's write does; the reader never reads
            except ConnectionClosedError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with trio.move_on_after(1) as closing:
                await muxed.close()  # its GO_AWAY waits for the frame being written
            assert closing.cancelled_caught
        assert trio.current_time() - start == pytest.approx(1)  # not the frame's 10 s
        assert muxed.whole_frames.broken == "the connection's close was cut short"
        assert len(failed) == 1  # the stuck write, cut
        with pytest.raises(IncompleteReadError):  # the peer sees the connection end
            await reader.read(len(FRAME))


async def test_a_close_lets_a_frame_being_written_finish() -> None:
    with trio.fail_after(10):
        async with noise_pair() as (reader, writer):
            muxed = WholeFrameYamux(writer, ID.from_pubkey(create_new_key_pair().public_key))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(muxed._write_frame, FRAME)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(muxed.close)
                await trio.testing.wait_all_tasks_blocked()
                assert await reader.read(len(FRAME)) == FRAME  # whole, then the GO_AWAY
                assert (await reader.read(12))[1] == 3  # yamux's GO_AWAY frame type
            assert muxed.whole_frames.broken is None


async def test_nodes_write_their_yamux_frames_whole(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a") as a, node_in(tmp_path / "b") as b:
        with trio.fail_after(20):
            await a.connect(b.listen_addrs()[0])
        assert whole_frames.is_applied()
        for node, other in ((a, b), (b, a)):
            [conn] = node.host.get_network().get_connections(ID.from_base58(other.peer_id))
            muxed = conn.muxed_conn
            assert isinstance(muxed, WholeFrameYamux)
            assert muxed.secured_conn.write == muxed.whole_frames.write


async def test_a_node_drops_a_connection_whose_frame_missed_its_deadline(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a") as a, node_in(tmp_path / "b") as b:
        authorize(b, a)
        with trio.fail_after(20):
            await a.connect(b.listen_addrs()[0])
            [conn] = a.host.get_network().get_connections(ID.from_base58(b.peer_id))
            conn.muxed_conn.whole_frames.seconds = 0  # the next frame misses its deadline at once
            dropped = a.next_peers_change(), b.next_peers_change()
            with pytest.raises(PeerError):
                await a.call(b.peer_id, "echo", {"value": 1})
            for node, other, change in ((a, b, dropped[0]), (b, a, dropped[1])):
                while node.is_connected(other.peer_id):  # both ends see the connection go
                    await change.wait()
                    change = node.next_peers_change()

