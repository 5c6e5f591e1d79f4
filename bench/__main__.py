"""``make bench``: every benchmark in one run, each printing its table of ratios and writing JSON + PNG.

    .venv/bin/python -m bench [--quick]

- Part 1 (bench/foundation.py): trivial MCP tool calls side by side (triomcp in both eras, the
  official SDK on Hypercorn-trio and on Uvicorn, a bare floor) and the durable queue.
- Part 2 (bench/bridge.py): a tool call with one libp2p round trip, against the roadmap's bridge
  designs and the floors.
- Part 3 (bench/mesh_size.py): 2, 8 and 32 nodes.

Each part runs alone too (``python -m bench.foundation``, ...). This module only runs them in
turn; results go to bench/results/.
"""

from __future__ import annotations

import argparse
import shutil

from bench import bridge, foundation, mesh_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (Debian: apt-get install -y wrk)")
    quick = ["--quick"] if args.quick else []
    foundation.main(quick)
    print("\n== part 2: an MCP tool call that makes one libp2p round trip (bench/bridge.py) ==", flush=True)
    bridge.main(quick)
    print("\n== part 3: mesh size (bench/mesh_size.py) ==", flush=True)
    mesh_size.main(quick)


if __name__ == "__main__":
    main()
