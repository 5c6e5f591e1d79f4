"""Work announcements to the mesh: GossipSub (``triomcp.p2p.gossip``) against a direct push to
each connected peer, on the same nodes and connections; and what an idle gossip mesh costs.

    .venv/bin/python -m bench.gossip [--quick]

Eight real nodes in this process (TCP + Noise + yamux on 127.0.0.1, one Trio loop), all
authorizing each other, on two topologies: each connected to 3 others (a cube: node i to i^1,
i^2, i^4; at most 3 hops apart), then fully connected (7 each).
Node 0 is the owner; it announces ``{"type": "bench", "seq": n, "queued": 3}`` one at a time,
waiting for every node it can reach (or 2 s) before the next, 10 warm-up announcements excluded.

- (a) gossip: ``Gossip.publish``; messages sent per announcement: every node's ``copies_sent``
  (each copy an RPC to one peer, duplicates included), bytes: their protobuf bytes.
- (b) direct push, the design we reject: the owner writes one frame (``encode_frame``) on a
  long-lived stream to each of its connected peers, opened before the run. It reaches only those
  direct neighbours: 3 of the 7 other nodes on the cube.

Latency: from just before the owner's publish (or first write) to each receiver's ``receive()``,
p50/p99 over every (announcement, receiver) pair. All nodes share one CPU core and loop, so the
relaying nodes' work is serialised: on separate machines hops overlap, the wire adds its RTT.

Idle: 4 nodes, fully connected, gossip mounted, mesh formed, no announcements for 10 s (3 s with
``--quick``): RPCs and bytes sent by pubsub, per node per minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from triomcp.p2p import FrameDecoder, Node, encode_frame, open_node
from triomcp.p2p.gossip import Gossip, start_gossip
from triomcp.settings import P2PSettings

PUSH_PROTOCOL = "/triomcp/bench-push/1"
NODES = 8
WARMUP = 10
WAIT = 2.0
"""Seconds the owner waits for an announcement to reach every node it can."""


class Loud(logging.Handler):
    """Counts WARNING+ records (py-libp2p's included) during the run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def cube_edges(n: int) -> list[tuple[int, int]]:
    return [(i, i ^ bit) for i in range(n) for bit in (1, 2, 4) if i < i ^ bit < n]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Receipts:
    """When each node saw each announcement; the owner waits on it."""

    def __init__(self) -> None:
        self.at: dict[int, dict[int, float]] = {}
        self.changed = trio.Event()

    def seen(self, seq: int, node: int) -> None:
        self.at.setdefault(seq, {}).setdefault(node, time.perf_counter())
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, seq: int, count: int) -> None:
        with trio.move_on_after(WAIT):
            while len(self.at.get(seq, {})) < count:
                await self.changed.wait()


@contextlib.asynccontextmanager
async def mesh(work: Path, count: int, edges: list[tuple[int, int]]
               ) -> AsyncIterator[tuple[list[Node], list[Gossip], trio.Nursery]]:
    """``count`` nodes with gossip, connected along ``edges``, the gossip mesh formed."""
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_node(settings, work / f"n{i}", announce=False))
                 for i in range(count)]
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.authorized.authorize(other.peer_id, "bench")
        nursery = await stack.enter_async_context(trio.open_nursery())
        gossips = [await start_gossip(n.host, nursery, is_authorized=n.authorized.is_authorized) for n in nodes]
        try:
            with trio.fail_after(20):
                for i, j in edges:
                    await nodes[i].connect(nodes[j].listen_addrs()[0])
                degree = {i: sum(i in e for e in edges) for i in range(count)}
                for _ in range(1000):  # bounded: 20 s at most (the fail_after)
                    if all(len(g.mesh_peers()) >= min(degree[i], 6) for i, g in enumerate(gossips)):
                        break
                    await trio.sleep(0.02)
            yield nodes, gossips, nursery
        finally:
            for g in gossips:
                await g.aclose()
            nursery.cancel_scope.cancel()


async def announce_rounds(count: int, receivers: int, receipts: Receipts,
                          send: Callable[[dict[str, Any]], Awaitable[None]]) -> dict[str, float]:
    sent: dict[int, float] = {}
    for seq in range(-WARMUP, count):
        sent[seq] = time.perf_counter()
        await send({"type": "bench", "seq": seq, "queued": 3})
        await receipts.wait(seq, receivers)
    latencies = [(at - sent[seq]) * 1000 for seq in range(count) for at in receipts.at.get(seq, {}).values()]
    return {"reached": sum(len(receipts.at.get(seq, {})) for seq in range(count)) / count,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies)}


async def run_gossip(gossips: list[Gossip], count: int, nursery: trio.Nursery) -> dict[str, float]:
    receipts = Receipts()

    async def consume(i: int, gossip: Gossip) -> None:
        async with gossip.messages() as channel:
            async for _origin, message in channel:
                if message.get("type") == "bench":
                    receipts.seen(int(message["seq"]), i)

    for i, g in enumerate(gossips[1:], 1):
        nursery.start_soon(consume, i, g)
    before = [g.statistics() for g in gossips]
    result = await announce_rounds(count, len(gossips) - 1, receipts, gossips[0].publish)
    after = [g.statistics() for g in gossips]

    def total(field: str) -> int:
        return sum(getattr(a, field) - getattr(b, field) for a, b in zip(after, before, strict=True))

    rounds = count + WARMUP
    return {**result, "sent_per_announcement": total("copies_sent") / rounds,
            "rpcs_per_announcement": total("rpcs_sent") / rounds,
            "bytes_per_announcement": total("bytes_sent") / rounds,
            "rejected": total("rejected"), "dropped": total("dropped")}


async def run_push(nodes: list[Node], count: int, nursery: trio.Nursery) -> dict[str, float]:
    receipts = Receipts()

    def handler_for(i: int) -> Callable[[INetStream], Awaitable[None]]:
        async def on_stream(stream: INetStream) -> None:
            decoder = FrameDecoder()
            with contextlib.suppress(Exception):
                while data := await stream.read(65536):
                    for message in decoder.feed(data):
                        if isinstance(message, dict):
                            receipts.seen(int(message["seq"]), i)
        return on_stream

    for i, node in enumerate(nodes):
        node.host.set_stream_handler(TProtocol(PUSH_PROTOCOL), handler_for(i))
    owner = nodes[0]
    streams = [await owner.host.new_stream(ID.from_base58(peer), [TProtocol(PUSH_PROTOCOL)])
               for peer in owner.connected_peers()]
    written = 0

    async def push(message: dict[str, Any]) -> None:
        nonlocal written
        frame = encode_frame(message)
        for stream in streams:
            await stream.write(frame)
            written += len(frame)

    result = await announce_rounds(count, len(streams), receipts, push)
    for stream in streams:
        with contextlib.suppress(Exception):
            await stream.close()
    return {**result, "sent_per_announcement": float(len(streams)), "rpcs_per_announcement": float(len(streams)),
            "bytes_per_announcement": written / (count + WARMUP)}


TOPOLOGIES = {
    "cube": ("cube, 3 connections each", cube_edges(NODES)),
    "full": ("fully connected, 7 each", [(i, j) for i in range(NODES) for j in range(i + 1, NODES)]),
}


async def measure(count: int, idle_seconds: float) -> dict[str, Any]:
    report: dict[str, Any] = {"nodes": NODES, "announcements": count}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (label, edges) in TOPOLOGIES.items():
            async with mesh(work / name, NODES, edges) as (nodes, gossips, nursery):
                degrees = sorted(len(g.mesh_peers()) for g in gossips)
                gossip = await run_gossip(gossips, count, nursery)
                push = await run_push(nodes, count, nursery)
            report[name] = {"topology": label, "mesh_degrees": degrees, "gossip": gossip, "push": push}
        full = [(i, j) for i in range(4) for j in range(i + 1, 4)]
        async with mesh(work / "idle", 4, full) as (_, idle_gossips, _nursery):
            await trio.sleep(1.5)  # past the heartbeat that follows the mesh forming
            before = [g.statistics() for g in idle_gossips]
            await trio.sleep(idle_seconds)
            after = [g.statistics() for g in idle_gossips]
    per_minute = 60 / idle_seconds / len(after)
    pairs = list(zip(after, before, strict=True))
    report["idle"] = {"seconds": idle_seconds, "nodes": 4,
                      "rpcs_per_node_per_minute": sum(a.rpcs_sent - b.rpcs_sent for a, b in pairs) * per_minute,
                      "bytes_per_node_per_minute": sum(a.bytes_sent - b.bytes_sent for a, b in pairs) * per_minute}
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 announcements, 3 s idle")
    quick = parser.parse_args(argv).quick
    loud = Loud()
    logging.getLogger().addHandler(loud)
    logging.getLogger("libp2p").propagate = True  # its warnings and errors are counted too
    start = time.perf_counter()
    report = trio.run(measure, 50 if quick else 200, 3.0 if quick else 10.0)
    report["warning_or_error_log_records"] = len(loud.records)
    report["seconds"] = round(time.perf_counter() - start, 1)
    others = NODES - 1
    print(f"\nwork announcements from node 0 to {NODES} nodes, {report['announcements']} one at a time")
    print(f"  {'topology':26} {'design':30} {'reached':>8} {'p50 ms':>7} {'p99 ms':>7} {'msgs/ann':>9} "
          f"{'writes/ann':>10} {'bytes/ann':>10}")
    for name in TOPOLOGIES:
        t = report[name]
        for design, r in (("(a) gossipsub v1.1, D=6", t["gossip"]), ("(b) direct push, stream/peer", t["push"])):
            print(f"  {t['topology']:26} {design:30} {r['reached'] / others:8.0%} {r['p50_ms']:7.2f} "
                  f"{r['p99_ms']:7.2f} {r['sent_per_announcement']:9.1f} {r['rpcs_per_announcement']:10.1f} "
                  f"{r['bytes_per_announcement']:10.0f}")
        print(f"  {'':26} gossip mesh degrees {t['mesh_degrees']}")
    idle = report["idle"]
    print(f"  idle gossip, {idle['nodes']} nodes fully connected, {idle['seconds']:.0f} s: "
          f"{idle['rpcs_per_node_per_minute']:.1f} RPCs, {idle['bytes_per_node_per_minute']:.0f} bytes "
          f"per node per minute")
    print(f"  WARNING/ERROR log records during the run: {report['warning_or_error_log_records']}; "
          f"{report['seconds']} s")
    for record in loud.records[:10]:
        print(f"    {record.levelname} {record.name}: {record.getMessage()[:200]}")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
