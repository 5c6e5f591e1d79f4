"""Bounded raw-frame fuzz of a live node's /triomcp/mcp/1.0.0 (a real `triomcp node` process); and
the inputs themselves: each regenerated from ``(seed, index)`` alone."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from harness.procs import env_for, started, wait_for_announce
from reliability import p2p_fuzz, p2p_inputs
from triomcp.mcp.results import modern_meta
from triomcp.p2p import CLI_IDENTITY_FILE, MCP_PROTOCOL, open_node
from triomcp.settings import P2PSettings

MAX_FRAME = 65536


def test_bad_frames_get_error_replies_and_the_stream_and_node_survive(tmp_path: Path) -> None:
    data = tmp_path / "node"
    env = env_for(data, "node", log_level="WARNING", p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, tmp_path / "node.log") as proc:
        info = wait_for_announce(data, proc)
        tally = trio.run(lambda: p2p_fuzz.fuzz_node(data, info["multiaddrs"][0], inputs=100, flood=200, seed=3,
                                                    max_frame_bytes=MAX_FRAME, streams=2))
        assert proc.poll() is None  # no crash
    assert tally.inputs == 100 and tally.streams_failed == 0, tally.failures
    # no stream killed, no hang, nothing unanswered (the two notifications/cancelled with an id
    # among these inputs included), no internal error
    assert [i for i in range(100) if _cancel_with_id(p2p_inputs.frame_input(3, i, MAX_FRAME).data)] == [10, 55]
    assert tally.bad == 0, tally.failures
    assert tally.probes_answered == tally.probes_sent == 98  # each bad frame left its stream usable
    assert tally.error_replies >= 40  # invalid UTF-8, bad JSON, not an object, oversized...: each answered
    assert {"-32700", "-32600"} <= tally.errors_by_code.keys()
    assert tally.flood_answered == 200
    assert tally.serving_after
    assert "MCP stream handler failed" not in (tmp_path / "node.log").read_text()


def test_seed_and_index_regenerate_the_same_frame() -> None:
    in_a_run = [p2p_inputs.frame_input(5, i, MAX_FRAME) for i in range(150)]
    for i in (0, 14, 15, 48, 49, 99, 149):  # alone, out of order: the same bytes
        assert p2p_inputs.frame_input(5, i, MAX_FRAME) == in_a_run[i]
        assert in_a_run[i].ref == f"5:{i}"
    assert [i.index for i in in_a_run if i.ending] == [49, 99, 149]  # the last of each stream ends it
    assert p2p_inputs.frame_input(6, 3, MAX_FRAME).data != in_a_run[3].data


def test_answers_owed_follow_json_rpc() -> None:
    assert p2p_inputs.answers_owed(b'{"jsonrpc":"2.0","method":"x"}', 100) == (0, None)  # a notification
    assert p2p_inputs.answers_owed(b'{"jsonrpc":"2.0","id":"a","method":"x"}', 100) == (1, "a")
    assert p2p_inputs.answers_owed(b'{"jsonrpc":"2.0","id":true,"method":"x"}', 100) == (1, None)
    assert p2p_inputs.answers_owed(b"[1]", 100)[0] == 1 and p2p_inputs.answers_owed(b"\xff", 100)[0] == 1
    assert p2p_inputs.answers_owed(b"{}" + b" " * 200, 100)[0] == 1  # too big: one error, skipped
    # a notifications/cancelled with an id is a request: owed its answer (once counted apart, unanswered)
    cancel = b'{"jsonrpc":"2.0","id":3,"method":"notifications/cancelled","params":{"requestId":1}}'
    assert p2p_inputs.answers_owed(cancel, 1000) == (1, 3)
    found = p2p_inputs.frame_input(1, 670, MAX_FRAME)  # the fuzzer's example of the defect
    assert _cancel_with_id(found.data) and (found.owed, found.ident) == (1, -1)


def _cancel_with_id(data: bytes) -> bool:
    try:
        value = json.loads(data[4:])
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("method") == "notifications/cancelled" and "id" in value


def test_resetting_streams_while_the_node_is_blocked_writing_keeps_the_connection(tmp_path: Path) -> None:
    """30 streams each ask for 60 ``tools/list`` (MBs of answers) while the client stops reading its
    socket, so the node's writes block; the client resets the 30 streams, then reads again. The
    connection must still carry a call. Before ``p2p/whole_frames.py`` the client read "Failed
    authentication of message" (a write cancelled after its encryption put the node's Noise stream
    out of step) and the connection was gone."""
    assert _blocked_node(tmp_path, reset=True)


def test_the_same_without_the_resets_keeps_the_connection(tmp_path: Path) -> None:
    """The control of the test above: blocked writes alone do not break the connection."""
    assert _blocked_node(tmp_path, reset=False)


def _blocked_node(tmp_path: Path, *, reset: bool) -> bool:
    data = tmp_path / "node"
    env = env_for(data, "node", log_level="WARNING", p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, tmp_path / "node.log") as proc:
        info = wait_for_announce(data, proc)
        survived = trio.run(lambda: _reset_while_blocked(data, info["multiaddrs"][0], reset=reset))
        assert proc.poll() is None
    return survived


async def _reset_while_blocked(data: Path, multiaddr: str, *, reset: bool) -> bool:
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, mdns=False)
    with trio.fail_after(60):
        async with open_node(settings, data, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
            pid = ID.from_base58(await node.connect(multiaddr))
            muxed = node.host.get_network().get_connections(pid)[0].muxed_conn
            secured = muxed.secured_conn
            reading = trio.Event()
            reading.set()
            read = secured.read

            async def gated_read(n: int | None = None) -> bytes:
                await reading.wait()
                return bytes(await read(n))

            secured.read = gated_read
            streams = [await node.host.new_stream(pid, [TProtocol(MCP_PROTOCOL)]) for _ in range(30)]
            reading = trio.Event()  # the client stops reading: the node's writes fill the socket and block
            meta = modern_meta()
            for k, stream in enumerate(streams):
                await stream.write(b"".join(p2p_inputs.frame(json.dumps(
                    {"jsonrpc": "2.0", "id": f"{k}-{i}", "method": "tools/list", "params": {"_meta": meta}}).encode())
                    for i in range(60)))
            await trio.sleep(3)
            for stream in streams if reset else []:
                await stream.reset()  # the node cancels the requests in flight, some mid-write
            await trio.sleep(2)
            reading.set()
            await trio.sleep(2)
            if muxed.event_shutting_down.is_set():
                return False
            stream = await node.host.new_stream(pid, [TProtocol(MCP_PROTOCOL)])
            await stream.write(p2p_inputs.probe("after"))
            reply = b""
            while len(reply) < 4 or len(reply) < 4 + int.from_bytes(reply[:4], "big"):
                reply += await stream.read(65536)
            return b'"result"' in reply and not muxed.event_shutting_down.is_set()
