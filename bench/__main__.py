"""``make bench``: every benchmark in one run, each printing its table of ratios and writing JSON + PNG.

    .venv/bin/python -m bench [--quick] [PART ...]      (PART: foundation, bridge, mesh, relay, announce, nat;
                                                         default: all but nat)

- Part 1 (bench/foundation.py): trivial MCP tool calls side by side (triomcp in both eras, the
  official SDK on Hypercorn-trio and on Uvicorn, a bare floor) and the durable queue.
- Part 2 (bench/bridge.py): a tool call with one libp2p round trip, against the roadmap's bridge
  designs and the floors.
- Part 3 (bench/mesh_size.py): 2, 8, 32 and 64 nodes, each a real process.
- Part 4 (bench/relay.py): a request forwarded to the node holding its session or task, against
  the same request served there.
- Part 5 (bench/gossip.py, bench/mesh_sim.py): work announcements over GossipSub against a direct
  push, and the mesh's real scheduling code in a simulation of 1,000 and 10,000 nodes.

Each part runs alone too (``python -m bench.foundation``, ...). This module only runs them in
turn; results go to bench/results/.
"""

from __future__ import annotations

import argparse
import shutil

from bench import bridge, foundation, gossip, mesh_sim, mesh_size, nat, relay

PARTS = ("foundation", "bridge", "mesh", "relay", "announce", "nat")
DEFAULT_PARTS = PARTS[:-1]
"""``nat`` runs only when named (it needs root to create namespaces)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"run only these ({', '.join(PARTS)}); default: all")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    parts = args.parts or DEFAULT_PARTS
    if set(parts) - {"nat"} and shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (Debian: apt-get install -y wrk)")
    quick = ["--quick"] if args.quick else []
    if "foundation" in parts:
        foundation.main(quick)
    if "bridge" in parts:
        print("\n== part 2: an MCP tool call that makes one libp2p round trip (bench/bridge.py) ==", flush=True)
        bridge.main(quick)
    if "mesh" in parts:
        print("\n== part 3: mesh size (bench/mesh_size.py) ==", flush=True)
        mesh_size.main(quick)
    if "relay" in parts:
        print("\n== part 4: a request forwarded to the node holding it (bench/relay.py) ==", flush=True)
        relay.main(quick)
    if "announce" in parts:
        print("\n== part 5: work announcements (bench/gossip.py) and the mesh at scale (bench/mesh_sim.py) ==",
              flush=True)
        gossip.main(quick)
        mesh_sim.main(quick)
    if "nat" in parts:
        print("\n== nat: p2p_call_tool relayed, hole-punched and direct, behind NAT (bench/nat.py) ==", flush=True)
        nat.main(quick)


if __name__ == "__main__":
    main()
