"""``read_ahead.py``: libp2p's TCP reads keep what the socket gave beyond what was asked, and hand
it out in order, on a real TCP connection on 127.0.0.1."""

from __future__ import annotations

import os

import trio
from libp2p.io.trio import TrioTCPStream

from triomcp.p2p import read_ahead


async def _pair() -> tuple[trio.SocketStream, TrioTCPStream, trio.SocketListener]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    sender = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listener.accept()
    return sender, TrioTCPStream(accepted), listener


async def test_small_exact_reads_get_every_byte_in_order_with_few_socket_reads() -> None:
    assert read_ahead.apply() in (True, False) and read_ahead.is_applied()  # open_node applies it too
    sender, reader, listener = await _pair()
    receives = 0
    receive_some = reader.stream.receive_some

    async def counted(n: int | None = None) -> bytes:
        nonlocal receives
        receives += 1
        return bytes(await receive_some(n))

    reader.stream.receive_some = counted  # type: ignore[method-assign]
    data = os.urandom(50_000)
    await sender.send_all(data)
    await sender.send_eof()
    got = bytearray()
    sizes = [2, 1, 12, 3, 1000, 7]
    i = 0
    with trio.fail_after(10):
        while chunk := await reader.read(sizes[i % len(sizes)]):
            assert len(chunk) <= sizes[i % len(sizes)]
            got += chunk
            i += 1
    assert bytes(got) == data
    assert await reader.read(5) == b""  # the end stays the end
    # One socket read per 64 KiB at most once the data is there, not one per piece (i pieces here).
    assert i > 100 and receives < i / 10, (i, receives)
    await sender.aclose()
    await reader.close()
    await listener.aclose()


async def test_two_readers_at_once_lose_no_byte_and_keep_the_stream_order() -> None:
    read_ahead.apply()
    sender, reader, listener = await _pair()
    data = bytes(range(256)) * 400
    pieces: list[tuple[int, bytes]] = []
    order = 0

    async def read_into(n: int) -> None:
        nonlocal order
        while chunk := await reader.read(n):
            pieces.append((order, chunk))
            order += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_into, 5)
        nursery.start_soon(read_into, 11)
        for start in range(0, len(data), 9000):
            await sender.send_all(data[start:start + 9000])
            await trio.sleep(0.001)
        await sender.send_eof()
    assert b"".join(chunk for _, chunk in sorted(pieces)) == data
    await sender.aclose()
    await reader.close()
    await listener.aclose()
