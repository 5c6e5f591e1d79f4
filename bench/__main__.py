"""``make bench``: every benchmark in one run, each printing its table of ratios and writing JSON + PNG.

    .venv/bin/python -m bench [--quick] [PART ...]      (PART: foundation, bridge, mesh, relay, announce, nat;
                                                         default: all; nat only as root with nft)

- Part 1 (bench/foundation.py): trivial MCP tool calls side by side (triomcp in both eras, the
  official SDK on Hypercorn-trio and on Uvicorn, a bare floor) and the durable queue.
- Part 2 (bench/bridge.py): a tool call with one libp2p round trip, against the roadmap's bridge
  designs and the floors.
- Part 3 (bench/mesh_size.py): 2, 8, 32 and 64 nodes, each a real process.
- Part 4 (bench/relay.py): a request forwarded to the node holding its session or task, against
  the same request served there.
- Part 5 (bench/gossip.py, bench/mesh_sim.py): work announcements over GossipSub against a direct
  push, and the mesh's real scheduling code in a simulation of 1,000 and 10,000 nodes.
- Part 6, nat (bench/nat.py): ``p2p_call_tool`` relayed, hole-punched and direct, in network
  namespaces behind NAT routers. It needs root and nft (``make test`` installs nftables): without
  them ``make bench`` says so and runs the rest; named alone it fails.

Each part runs alone too (``python -m bench.foundation``, ...). This module runs them in turn,
then prints every goal the parts measured in one table (:func:`goals`): the issue it comes from,
the figure of this run, the target, and whether it was reached. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from bench import bridge, foundation, gossip, mesh_sim, mesh_size, nat, relay

PARTS = ("foundation", "bridge", "mesh", "relay", "announce", "nat")
DEFAULT_PARTS = PARTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"run only these ({', '.join(PARTS)}); default: all")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    parts = list(args.parts or DEFAULT_PARTS)
    if "nat" in parts and not (os.geteuid() == 0 and shutil.which("nft")):
        why = "bench nat needs root and nft (Debian: apt-get install -y nftables) to build its network namespaces"
        if args.parts:
            raise SystemExit(why)
        print(f"(skipping part 6: {why})", flush=True)
        parts.remove("nat")
    if set(parts) - {"nat"} and shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (Debian: apt-get install -y wrk)")
    quick = ["--quick"] if args.quick else []
    reports: dict[str, dict[str, Any]] = {}
    if "foundation" in parts:
        reports["foundation"] = foundation.main(quick)
    if "bridge" in parts:
        print("\n== part 2: an MCP tool call that makes one libp2p round trip (bench/bridge.py) ==", flush=True)
        reports["bridge"] = bridge.main(quick)
    if "mesh" in parts:
        print("\n== part 3: mesh size (bench/mesh_size.py) ==", flush=True)
        reports["mesh"] = mesh_size.main(quick)
    if "relay" in parts:
        print("\n== part 4: a request forwarded to the node holding it (bench/relay.py) ==", flush=True)
        reports["relay"] = relay.main(quick)
    if "announce" in parts:
        print("\n== part 5: work announcements (bench/gossip.py) and the mesh at scale (bench/mesh_sim.py) ==",
              flush=True)
        gossip.main(quick)
        mesh_sim.main(quick)
    if "nat" in parts:
        print("\n== part 6: p2p_call_tool relayed, hole-punched and direct, behind NAT (bench/nat.py) ==", flush=True)
        nat.main(quick)
    rows = goals(reports)
    if rows:
        width = max(len(row[1]) for row in rows)
        print("\n== the goals measured in this run ==")
        print(f"{'issue':8} {'goal':{width}} {'measured':>12} {'target':>10}  reached")
        for issue, goal, measured, target, reached in rows:
            print(f"{issue:8} {goal:{width}} {measured:>12} {target:>10}  "
                  f"{'-' if reached is None else 'yes' if reached else 'NO'}")


def goals(reports: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, bool | None]]:
    """(issue, goal, measured, target, reached) for every goal the parts in ``reports`` measured."""
    out: list[tuple[str, str, str, str, bool | None]] = []
    if "foundation" in reports:
        report = reports["foundation"]
        for row in report["ratios"]:
            out.append((row["source"].removeprefix("issue "), f"HTTP tool call, triomcp modern: {row['ratio']}",
                        f"{row['measured']:.3f}", row["goal"], row["met"]))
        tps = report["taskqueue_local_tasks_per_s"]["median"]
        out.append(("18", "durable local queue, fsync per commit: tasks/s", f"{tps:.0f}", ">= 2000", tps >= 2000))
    if "bridge" in reports:
        for row in reports["bridge"]["ratios"]:
            issue = "18" if "chained" in row["ratio"] else "mission"
            out.append((issue, f"P2P tool call: {row['ratio']}", f"{row['measured']:.3f}", row["goal"], row["met"]))
    if "mesh" in reports:
        for goal, measured, target, reached in mesh_size.goals(reports["mesh"]):
            out.append(("15", f"mesh: {goal}", measured, target, reached))
    if "relay" in reports:
        for row in reports["relay"]["ratios"]:
            out.append(("14", f"forwarded {row['kind']}: p50 / local", f"{row['p50_ratio']:.3f}", row["p50_goal"],
                        row["p50_met"]))
            out.append(("14", f"forwarded {row['kind']}: calls/s / local", f"{row['rps_ratio']:.3f}", row["rps_goal"],
                        row["rps_met"]))
    return out


if __name__ == "__main__":
    main()
