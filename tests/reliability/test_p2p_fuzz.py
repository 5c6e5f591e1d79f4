"""Bounded raw-frame fuzz of a live node's /triomcp/mcp/1.0.0 (a real `triomcp node` process)."""

from __future__ import annotations

from pathlib import Path

import trio

from harness.procs import env_for, started, wait_for_announce
from reliability import p2p_fuzz

MAX_FRAME = 65536


def test_bad_frames_get_error_replies_and_the_stream_and_node_survive(tmp_path: Path) -> None:
    data = tmp_path / "node"
    env = env_for(data, "node", log_level="WARNING", p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, tmp_path / "node.log") as proc:
        info = wait_for_announce(data, proc)
        tally = trio.run(lambda: p2p_fuzz.fuzz_node(data, info["multiaddrs"][0], batches=2, flood=200, seed=3,
                                                    max_frame_bytes=MAX_FRAME))
        assert proc.poll() is None  # no crash
    assert tally.streams_failed == 0, tally.notes
    assert tally.probes_answered == tally.probes_sent  # each bad frame left its stream usable
    assert tally.error_replies >= 2 * 7  # invalid UTF-8, bad JSON, not an object, oversized...: each answered
    assert {"-32700", "-32600"} <= tally.errors_by_code.keys()
    assert tally.flood_answered == 200
    assert tally.serving_after
    assert "MCP stream handler failed" not in (tmp_path / "node.log").read_text()
