"""``python -m bench nat``: ``p2p_call_tool`` over a relay, over a hole-punched connection and over a
direct connection to a public node, side by side in one run, in network namespaces (needs root and nft).

    .venv/bin/python -m bench nat [--quick]      (or: .venv/bin/python -m bench.nat [--quick])

The topology of the NAT tests (``tests/netns.py``: a public relay R, A and B each behind its own
``endpoint-independent`` router, real ``triomcp node`` processes, all on the same veth/bridge
links with no added delay), run twice: once with hole punching off (A reaches B through R:
**relayed**) and once with it on (DCUtR made A-B direct: **hole-punched**, measured once the
relayed connection is closed, so every call takes the direct one). In the first run A
also calls R, which is public and dialed directly (**direct**). The client is one process in
A's namespace: a CLI host on A's node (as ``triomcp call`` is) calling A's ``p2p_call_tool``,
which calls ``server_status`` on the target over libp2p. Per design: a warm-up (excluded), then
``CALLS`` sequential calls (p50, p95), then ``CONCURRENCY`` callers for ``SECONDS`` (calls/s).
Results: bench/results/nat.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "nat.json"
CALLS, CONCURRENCY, SECONDS = 300, 8, 5.0


async def _client(target: str, calls: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """In A's namespace: A's ``p2p_call_tool`` to ``target``, timed."""
    import trio

    from triomcp.peer_cli import cli_node, resolve_target, tool
    from triomcp.settings import load_settings

    settings = load_settings()
    args = {"peer": target, "tool": "server_status", "arguments": {}}
    async with cli_node(settings) as node:
        a = await resolve_target(node, settings, None)

        async def one() -> float:
            begun = time.perf_counter()
            with trio.fail_after(30):
                out = await tool(node, a, "p2p_call_tool", args)
            if out.get("is_error"):
                raise RuntimeError(f"the call failed: {out}")
            return time.perf_counter() - begun

        for _ in range(20):
            await one()
        latencies = [await one() for _ in range(calls)]
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one()
                done += 1

        begun = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - begun
    latencies.sort()
    return {"p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 2),
            "calls_per_s": round(done / elapsed, 1), "sequential_calls": calls, "concurrency": concurrency}


def _measure(mesh: Any, target: str, calls: int, seconds: float) -> dict[str, Any]:
    from harness.procs import in_netns

    out = subprocess.run([*in_netns(mesh.ns["a"]), sys.executable, "-m", "bench.nat", "--client", target,
                          str(calls), str(CONCURRENCY), str(seconds)], env=mesh.env["a"], capture_output=True,
                         text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the client failed: {out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _connections(mesh: Any) -> list[str]:
    from tests.netns import cli_json

    peers = cli_json(mesh.call("a", "p2p_peers"))["peers"]
    return [c["kind"] for p in peers if p["peer_id"] == mesh.ids["b"] for c in p["connections"]]


def run(quick: bool) -> dict[str, Any]:
    from tests.netns import eventually, nat_mesh, nat_topology

    calls, seconds = (100, 2.0) if quick else (CALLS, SECONDS)
    results: dict[str, Any] = {}
    call_b = {"tool": "p2p_status", "arguments": {}}
    for hole_punch in (False, True):
        with tempfile.TemporaryDirectory() as tmp, nat_topology("endpoint-independent") as topology, \
                nat_mesh(Path(tmp), topology, hole_punch=hole_punch) as mesh:
            eventually(lambda: mesh.call("a", "p2p_call_tool", {"peer": mesh.ids["b"], **call_b}),
                       lambda c: c["is_error"] is False, "A reaching B")
            if hole_punch:
                # Only the direct connection: A's MCP stream to B moves to it at once and the
                # relayed one is closed once unused (p2p/direct.py; py-libp2p alone waited 60 s).
                eventually(lambda: mesh.call("a", "p2p_peers"),
                           lambda _: _connections(mesh) == ["direct"], "the hole-punched connection alone",
                           within=120)
                results["hole-punched"] = {**_measure(mesh, mesh.ids["b"], calls, seconds),
                                           "connections": _connections(mesh)}
            else:
                results["relayed"] = {**_measure(mesh, mesh.ids["b"], calls, seconds),
                                      "connections": _connections(mesh)}
                results["direct"] = {**_measure(mesh, mesh.ids["r"], calls, seconds),
                                     "connections": ["direct (A to public R)"]}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client", nargs=4, metavar=("TARGET", "CALLS", "CONCURRENCY", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        import trio

        target, calls, concurrency, seconds = args.client
        print(json.dumps(trio.run(_client, target, int(calls), int(concurrency), float(seconds))))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench nat needs root (it creates network namespaces and nft NAT routers)")
    results = run(args.quick)
    print(f"{'path':<14}{'p50 ms':>9}{'p95 ms':>9}{'calls/s':>10}  connections")
    for name in ("direct", "hole-punched", "relayed"):
        r = results[name]
        print(f"{name:<14}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['calls_per_s']:>10}  {r['connections']}")
    base = results["direct"]
    for name in ("hole-punched", "relayed"):
        r = results[name]
        print(f"{name} / direct: p50 x{r['p50_ms'] / base['p50_ms']:.2f}, "
              f"calls/s x{r['calls_per_s'] / base['calls_per_s']:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"quick": args.quick, "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()},
                                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "results": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
