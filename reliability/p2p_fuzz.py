"""Raw frames to a live node's ``/triomcp/mcp/1.0.0`` from a py-libp2p client host.

The client host uses the data dir's CLI identity (``identity-cli.key``), which the node
always authorizes, and the node's own transport settings (TCP + Noise + yamux, via
``triomcp.p2p.open_node``). Every batch runs on a fresh stream: bad frames interleaved with
valid ``tools/call`` probes, whose answers show the stream survived each bad frame.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from harness.mcp_http import tool_call
from triomcp.mcp.results import modern_meta
from triomcp.p2p import CLI_IDENTITY_FILE, open_node
from triomcp.p2p.framing import FrameDecoder, FrameIssue, encode_frame
from triomcp.p2p.rpc import MCP_PROTOCOL
from triomcp.settings import P2PSettings

DEADLINE = 10.0


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def probe(ident: str) -> bytes:
    return encode_frame(tool_call("server_status", {}, ident, meta=modern_meta()))


WRONG_SHAPES: list[Any] = [
    {}, {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"}, {"jsonrpc": "2.0", "id": 7, "method": 7},
    {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": [1]},
    {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": 5}},
    {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "nope", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 11, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
    {"jsonrpc": "2.0", "id": 12, "method": "no/such/method"}, {"jsonrpc": "2.0", "id": 13, "result": {}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": [1]},
    {"jsonrpc": "2.0", "method": "notifications/whatever", "params": 5},
    {"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": {"name": "server_status", "_meta": []}},
    {"jsonrpc": "2.0", "id": "\udfff", "method": "ping"},
]


REGRESSIONS: list[Any] = [
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}},
    {"jsonrpc": "2.0", "id": "\udfff", "method": "ping"},
]
"""Frames that once killed the stream: an unhashable ``requestId`` raised in ``serve_stream``; a lone
surrogate in an id made the reply unencodable, and ``send`` marked the stream broken."""


def bad_frames(rng: random.Random, max_frame_bytes: int) -> list[tuple[str, bytes]]:
    """(kind, bytes) of frames after which the stream must stay usable."""
    out: list[tuple[str, bytes]] = []
    out.append(("invalid-utf8", frame(b'{"a":"\xff\xfe"}')))
    out.append(("invalid-json", frame(rng.choice([b"{nope", b"", b"{", b'{"a":1,}', b"\x00"]))))
    out.append(("not-an-object", frame(rng.choice([b"[1,2]", b"42", b'"s"', b"null", b"[]"]))))
    out.append(("deep-json", frame(b"[" * 50_000 + b"]" * 50_000) if max_frame_bytes >= 100_000
                else frame(b"[" * (max_frame_bytes // 2) + b"]" * (max_frame_bytes // 2))))
    for shape in WRONG_SHAPES:
        body = json.dumps(shape).encode("utf-8", "surrogatepass")
        out.append((f"wrong-shape {body[:80].decode('utf-8', 'replace')}", frame(body)))
    out.append(("oversized-length", struct.pack(">I", max_frame_bytes + 1) + rng.randbytes(max_frame_bytes + 1)))
    out.append(("random-bytes-frame", frame(rng.randbytes(rng.randrange(1, 512)))))
    rng.shuffle(out)
    return out


@dataclass
class P2PTally:
    frames_sent: int = 0
    replies: int = 0
    error_replies: int = 0
    probes_sent: int = 0
    probes_answered: int = 0
    streams: int = 0
    reconnects: int = 0
    """Times the client had to dial the node again because its connection was gone."""
    streams_failed: int = 0
    """Streams that could not be opened or ended before their probes were answered (non-fatal batches)."""
    serving_after: bool = False
    flood_sent: int = 0
    flood_answered: int = 0
    flood_rate_limited: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, tally: P2PTally) -> None:
        self.tally = tally
        self.answered: dict[str, dict[str, Any]] = {}
        self.changed = trio.Event()
        self.ended = False

    async def run(self, stream: Any) -> None:
        decoder = FrameDecoder(64 * 1024 * 1024)
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                for item in decoder.feed(data):
                    if isinstance(item, FrameIssue):
                        self.tally.notes.append(f"bad reply frame: {item.message}")
                        continue
                    self.tally.replies += 1
                    if "error" in item:
                        self.tally.error_replies += 1
                        code = str((item.get("error") or {}).get("code"))
                        self.tally.errors_by_code[code] = self.tally.errors_by_code.get(code, 0) + 1
                    if isinstance(item.get("id"), str):
                        self.answered[item["id"]] = item
                    self.changed.set()
                    self.changed = trio.Event()
        except Exception:  # StreamEOF / StreamReset: the stream is over
            pass
        self.ended = True
        self.changed.set()

    async def wait_for(self, idents: set[str]) -> bool:
        with trio.move_on_after(DEADLINE):
            while not idents <= self.answered.keys() and not self.ended:
                await self.changed.wait()
        return idents <= self.answered.keys()


async def _batch(node: Any, peer: str, chunks: list[bytes], probes: list[str], tally: P2PTally,
                 *, fatal: bool = False, multiaddr: str = "") -> None:
    """One stream: write ``chunks``, wait for every probe's answer (or the end of a fatal batch)."""
    tally.streams += 1
    try:
        if not node.is_connected(peer) and multiaddr:
            tally.reconnects += 1
            await node.connect(multiaddr)
        stream = await node._open_stream(peer, MCP_PROTOCOL)
    except Exception as exc:
        tally.streams_failed += 1
        tally.notes.append(f"open stream: {exc}"[:200])
        return
    reader = _Reader(tally)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run, stream)
            try:
                for chunk in chunks:
                    await stream.write(chunk)
            except Exception as exc:
                if not fatal:
                    tally.notes.append(f"write: {exc}")
            ok = await reader.wait_for(set(probes)) if probes else True
            if fatal:  # the node must end the stream after a fatal frame: wait for that
                with trio.move_on_after(DEADLINE):
                    while not reader.ended:
                        await reader.changed.wait()
                if not reader.ended:
                    tally.notes.append("a fatal frame did not end the stream")
                    ok = False
            elif not ok:
                lost = [p for p in probes if p not in reader.answered]
                tally.notes.append(f"stream ended early: {len(lost)} of {len(probes)} probes unanswered")
            if not ok:
                tally.streams_failed += 1
            tally.probes_answered += sum(1 for p in probes if p in reader.answered
                                         and "result" in reader.answered[p])
            nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def fuzz_node(data_dir: Path, multiaddr: str, *, batches: int, flood: int, seed: int,
                    max_frame_bytes: int) -> P2PTally:
    """Speak raw frames to the node at ``multiaddr`` as this data dir's CLI identity."""
    rng = random.Random(seed)
    tally = P2PTally()
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, mdns=False)
    async with open_node(settings, data_dir, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
        peer = await node.connect(multiaddr)
        counter = 0
        for b in range(batches):
            chunks: list[bytes] = []
            probes: list[str] = []
            for _kind, data in bad_frames(rng, max_frame_bytes):
                chunks.append(data)
                counter += 1
                ident = f"probe-{counter}"
                chunks.append(probe(ident))
                probes.append(ident)
                tally.frames_sent += 2
                tally.probes_sent += 1
            await _batch(node, peer, chunks, probes, tally, multiaddr=multiaddr)
            if b % 4 == 0:  # fatal endings, each on its own stream
                ending = rng.choice([
                    struct.pack(">I", 0xFFFFFFFF),                      # beyond the hard cap
                    encode_frame({"jsonrpc": "2.0", "id": 1, "method": "ping"})[:-3],  # truncated, then EOF
                    struct.pack(">I", 100)[:2],                          # a cut length prefix
                ])
                tally.frames_sent += 1
                await _batch(node, peer, [ending], [], tally, fatal=ending.startswith(b"\xff"), multiaddr=multiaddr)
        if flood:
            reader_tally = P2PTally()
            chunks = [probe(f"flood-{i}") for i in range(flood)]
            tally.frames_sent += flood
            tally.flood_sent = flood
            before = tally.streams_failed
            await _batch(node, peer, [b"".join(chunks)], [f"flood-{i}" for i in range(flood)], reader_tally,
                         multiaddr=multiaddr)
            tally.reconnects += reader_tally.reconnects
            tally.flood_answered = reader_tally.replies
            tally.flood_rate_limited = reader_tally.errors_by_code.get("-32010", 0)
            tally.replies += reader_tally.replies
            tally.error_replies += reader_tally.error_replies
            tally.streams += 1
            tally.streams_failed = before + reader_tally.streams_failed
    tally.serving_after = await still_serving(data_dir, multiaddr)
    return tally


async def still_serving(data_dir: Path, multiaddr: str) -> bool:
    """A fresh client host (the CLI identity) gets a ``server_status`` result from the node."""
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, mdns=False)
    final = P2PTally()
    with trio.move_on_after(2 * DEADLINE):
        async with open_node(settings, data_dir, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
            peer = await node.connect(multiaddr)
            await _batch(node, peer, [probe("final")], ["final"], final)
    return final.probes_answered == 1


def summary(tally: P2PTally) -> dict[str, Any]:
    return {"frames_sent": tally.frames_sent, "replies": tally.replies, "error_replies": tally.error_replies,
            "errors_by_code": dict(sorted(tally.errors_by_code.items())), "streams": tally.streams,
            "streams_failed": tally.streams_failed, "reconnects": tally.reconnects, "probes_sent": tally.probes_sent,
            "probes_answered": tally.probes_answered, "flood_sent": tally.flood_sent,
            "flood_answered": tally.flood_answered, "flood_rate_limited": tally.flood_rate_limited,
            "serving_after": tally.serving_after,
            "notes": tally.notes[:20]}
