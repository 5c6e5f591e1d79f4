"""Discovery from one bootstrap address: peer exchange alone, against rendezvous on top of it.

    .venv/bin/python -m bench.discovery [--quick]

N real libp2p nodes in one Trio process on 127.0.0.1 (TCP + Noise + yamux, as ``open_node`` builds
them), all authorizing each other. Node 0 starts first; then nodes 1..N-1 start one after the
other, each knowing only node 0's address (``p2p.bootstrap``). The clock starts when node 1 is
opened; two instants are recorded:

- **known**: every node has an address of every other (its ``peers.db``, what peer exchange or
  rendezvous told it, or a connection);
- **connected**: every node has ``min(N - 1, p2p.connections_low)`` listed peers connected (as far
  as the bounded-connection settings allow) and none is above ``connections_high``.

Two designs, in turn (the order rotates between repetitions):

- ``exchange``: what triomcp does (``/triomcp/peers/1.0.0``, ``p2p/exchange.py``);
- ``rendezvous``: the same, plus py-libp2p 0.8.1's rendezvous (``libp2p.discovery.rendezvous``):
  node 0 hosts the rendezvous point; every other node, once connected to it, REGISTERs under the
  mesh name and DISCOVERs it every second while it has fewer peers than it wants (as the exchange
  does), remembering every peer it hears of and dialing them. A prototype for the measurement only:
  the library's service has no authorization and no deadline on its stream, and would need both.

Also counted: exchanges asked (all nodes) and rendezvous requests. Kademlia (``libp2p.kad_dht``)
is not run here: measured earlier on this machine, a provider record took 46 ms to publish and
57-79 ms to find (one provider returned 3 times), more than a whole peer exchange, with about 46
"Failed to read DHT message" lines on stderr per run; a DHT pays for itself on meshes far larger
than what one node's connection limit (16) already covers.

Results: bench/results/discovery.json, and the table printed (median of the repetitions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.discovery.rendezvous import RendezvousClient, RendezvousService
from libp2p.peer.id import ID

from bench.stats import rotated, summary
from triomcp.p2p import AuthorizedPeers, Node, open_node
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.settings import P2PSettings, ReachabilitySettings, RelaySettings

RESULTS = Path(__file__).resolve().parent / "results"
DEADLINE = 60.0
"""Seconds one run may take before it is recorded as not converged."""
MESH = "bench-mesh"
DESIGNS = ("exchange", "rendezvous")


@dataclass(frozen=True)
class Config:
    nodes: int
    low: int = 8
    high: int = 16

    @property
    def name(self) -> str:
        return f"N={self.nodes} low={self.low} high={self.high}"


def _dirs(root: Path, count: int) -> list[Path]:
    dirs = [root / f"n{i}" for i in range(count)]
    ids = [peer_id_of(load_or_create_identity(d / "identity.key")) for d in dirs]
    for d in dirs:
        allowed = AuthorizedPeers(d / "authorized_peers")
        for i, pid in enumerate(ids):
            if dirs[i] != d:
                allowed.authorize(pid, f"n{i}")
    return dirs


def _settings(cfg: Config, bootstrap: list[str]) -> P2PSettings:
    return P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=bootstrap, connections_low=cfg.low,
                       connections_high=cfg.high, reachability=ReachabilitySettings(check=False),
                       relay=RelaySettings(hole_punch=False))


def _knows(node: Node, other: str) -> bool:
    return node.is_connected(other) or bool(node.known is not None and node.known.addrs(other))


def _converged(nodes: list[Node], cfg: Config) -> tuple[bool, bool]:
    ids = [n.peer_id for n in nodes]
    known = all(_knows(n, o) for n in nodes for o in ids if o != n.peer_id)
    want = min(cfg.nodes - 1, cfg.low)
    counts = [len([p for p in n.connected_peers() if n.authorized.is_listed(p)]) for n in nodes]
    return known, all(want <= c <= cfg.high for c in counts)


class _Rendezvous:
    """The prototype: register once, discover every second while the node wants peers."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0

    async def run(self, node: Node, point: Node) -> None:
        while not node.is_connected(point.peer_id):
            await node.wait_peers_changed()
        client = RendezvousClient(node.host, ID.from_base58(point.peer_id))
        with trio.fail_after(node.settings.stream_timeout):
            await client.register(MESH, ttl=120)
        self.requests += 1
        while True:
            try:  # the point may have trimmed this node's connection: dial it again
                with trio.fail_after(2 * node.settings.stream_timeout):
                    await node.ensure_connected(point.peer_id, point.listen_addrs()[:1])
                    found, _ = await client.discover(MESH, limit=256)
            except Exception:
                self.failures += 1
                await trio.sleep(1.0)
                continue
            finally:
                self.requests += 1
            for info in found:
                peer = info.peer_id.to_base58()
                if peer == node.peer_id or not node.authorized.is_listed(peer):
                    continue
                addrs = [f"{a}/p2p/{peer}" for a in info.addrs]
                await node._remember(peer, addrs)
                if node.wants_peers() and not node.is_connected(peer):
                    with contextlib.suppress(Exception), trio.move_on_after(2 * node.settings.dial_timeout):
                        await node.connections.dial_first(peer, addrs)
            with trio.move_on_after(1.0 if node.wants_peers() else 10.0):
                await node.wait_peers_changed()


async def _one_run(root: Path, cfg: Config, design: str) -> dict[str, Any]:
    dirs = _dirs(root, cfg.nodes)
    rendezvous = _Rendezvous()
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_node(_settings(cfg, []), dirs[0]))
        if design == "rendezvous":
            RendezvousService(first.host)  # mounts its handler on the host
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        nodes = [first]
        begun = trio.current_time()
        for d in dirs[1:]:
            node = await stack.enter_async_context(open_node(_settings(cfg, [first.listen_addrs()[0]]), d))
            nodes.append(node)
            if design == "rendezvous":
                nursery.start_soon(rendezvous.run, node, first)
        started = trio.current_time() - begun
        known_at = connected_at = None
        with trio.move_on_after(DEADLINE):
            while known_at is None or connected_at is None:
                known, connected = _converged(nodes, cfg)
                now = trio.current_time() - begun
                if known and known_at is None:
                    known_at = now
                if connected and connected_at is None:
                    connected_at = now
                await trio.sleep(0.01)
        asks = sum(n.exchange.asks for n in nodes)
        dials = sum(n.statistics().dial_failures for n in nodes)
        nursery.cancel_scope.cancel()
    return {"started_s": round(started, 3), "known_s": known_at, "connected_s": connected_at,
            "exchanges": asks, "rendezvous_requests": rendezvous.requests, "rendezvous_failures": rendezvous.failures,
            "dial_failures": dials}


async def _run_all(configs: list[Config], reps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for cfg in configs:
        runs: dict[str, list[dict[str, Any]]] = {d: [] for d in DESIGNS}
        for rep in range(reps):
            for design in rotated(DESIGNS, rep):
                with tempfile.TemporaryDirectory(prefix="triomcp-disc-") as tmp:
                    run = await _one_run(Path(tmp), cfg, design)
                runs[design].append(run)
                print(f"  {cfg.name} {design:10} rep {rep}: {run}", flush=True)
        results[cfg.name] = runs
    return results


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 3) if len(values) == len(runs) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition, N = 5 and 16 only")
    parser.add_argument("--mesh", action="append", metavar="N:LOW:HIGH", help="only these meshes")
    args = parser.parse_args(argv)
    configs = [Config(5), Config(8), Config(16), Config(16, low=3, high=5)]
    if args.quick:
        configs = [Config(5), Config(16)]
    if args.mesh:
        configs = [Config(*map(int, m.split(":"))) for m in args.mesh]
    reps = 1 if args.quick else 3
    wall = time.perf_counter()
    results = trio.run(_run_all, configs, reps)
    print(f"\nDiscovery from one bootstrap address (median of {reps}; seconds from the first node's start)")
    print("| mesh | design | all known s | all connected s | exchanges | rendezvous requests |")
    print("|---|---|---|---|---|---|")
    table = []
    for name, runs in results.items():
        for design, rows in runs.items():
            row = {"mesh": name, "design": design, "known_s": _median(rows, "known_s"),
                   "connected_s": _median(rows, "connected_s"),
                   "connected_range": summary([r["connected_s"] for r in rows if r["connected_s"] is not None] or [0]),
                   "exchanges": statistics.median(r["exchanges"] for r in rows),
                   "rendezvous_requests": statistics.median(r["rendezvous_requests"] for r in rows)}
            table.append(row)
            print(f"| {name} | {design} | {row['known_s']} | {row['connected_s']} | {row['exchanges']:.0f} | "
                  f"{row['rendezvous_requests']:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    name = "discovery.json" if not args.mesh else "discovery-" + "-".join(m.replace(":", "_") for m in args.mesh) + ".json"
    (RESULTS / name).write_text(json.dumps({"reps": reps, "table": table, "runs": results,
                                                        "wall_s": round(time.perf_counter() - wall, 1)}, indent=2))


if __name__ == "__main__":
    main()
