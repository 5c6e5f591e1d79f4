"""``make bench``: every benchmark in one run, each printing its table of ratios and writing JSON + PNG.

Part 1 (here): trivial MCP tool calls side by side (triomcp in both eras, the official SDK on
Hypercorn-trio and on Uvicorn, a bare floor) and the durable queue. Part 2 (bench/bridge.py): a
tool call with one libp2p round trip, against the roadmap's bridge designs and the floors.
Part 3 (bench/mesh_size.py): 2, 8 and 32 nodes.

    .venv/bin/python -m bench [--quick]

Each server runs in its own process; the load generator (wrk) runs in its own process too. All
servers are started first and warmed up (excluded); then each repetition measures every server in
turn, starting with a different one each time, at 16 connections (requests/s) and at 1 connection
(p50 and p99 latency); min/median/max are reported. Results go to
bench/results/foundation.json and bench/results/foundation.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import settle, spawn, stderr_of, stop

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LUA = HERE / "mcp_call.lua"
MODERN_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                  "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}
CASES = [
    # (label, server kind, era)
    ("triomcp modern", "triomcp", "modern"),
    ("triomcp legacy", "triomcp", "legacy"),
    ("SDK on Hypercorn-trio", "sdk-hypercorn", "modern"),
    ("SDK on Uvicorn", "sdk-uvicorn", "modern"),
    ("floor: bare Hypercorn-trio JSON", "floor", "modern"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call_body(ident: int, era: str) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "add", "arguments": {"a": 1, "b": 2}}
    if era == "modern":
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                           "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return spawn(["-m", "bench.servers", kind, str(port)], env)


def ready(url: str, era: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str | None:
    """Wait until a tool call succeeds; returns the legacy session id when era is legacy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {stderr_of(proc)}")
        try:
            if era == "legacy":
                init = httpx.post(url, timeout=5, headers={"content-type": "application/json",
                                                           "accept": "application/json, text/event-stream"},
                                  json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                                      "protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "bench", "version": "1"}}})
                session = init.headers["mcp-session-id"]
                headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                           "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
                httpx.post(url, timeout=5, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
                reply = httpx.post(url, timeout=5, headers=headers, json=call_body(1, era))
                if reply.status_code == 200 and "result" in reply.json():
                    return str(session)
            else:
                reply = httpx.post(url, timeout=5, headers=MODERN_HEADERS, json=call_body(1, era))
                if reply.status_code == 200:
                    body = reply.json()
                    assert "result" in body, body
                    return None
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} ({era}) not ready after {timeout}s")


def wrk(url: str, connections: int, seconds: float, era: str, session: str | None) -> dict[str, float]:
    env = {**os.environ, "MODE": era, "SESSION": session or ""}
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(LUA),
                          url.removesuffix("/mcp")], env=env, capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        latency[pct] = float(value) * scale
    return {"rps": rps, "p50_ms": latency.get("50", float("nan")), "p99_ms": latency.get("99", float("nan")),
            "errors": float(errors.group(1)) if errors else 0.0}


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def rotated(items: list[Any], rep: int) -> list[Any]:
    """``items`` starting at a different one each repetition, so no design always goes first."""
    k = rep % len(items)
    return items[k:] + items[:k]


def measure_all(cases: list[tuple[str, str, str]], *, reps: int, seconds: float) -> dict[str, dict[str, Any]]:
    """Every server started up front; then each repetition measures each of them in turn (interleaved).

    A shared machine drifts by 2x over minutes: measuring server A for a minute, then server B, would
    compare the machine at two moments. Interleaving spreads the drift over every server alike."""
    servers: list[dict[str, Any]] = []
    try:
        for label, kind, era in cases:
            port = free_port()
            servers.append({"label": label, "kind": kind, "era": era, "url": f"http://127.0.0.1:{port}/mcp",
                            "proc": start(kind, port), "rps": [], "p50": [], "p99": [], "errors": 0.0})
        for s in servers:
            s["session"] = ready(s["url"], s["era"], s["proc"])
            wrk(s["url"], 4, 1, s["era"], s["session"])  # warm-up, excluded
        for rep in range(reps):
            for s in rotated(servers, rep):
                settle([x["proc"].pid for x in servers])
                loaded = wrk(s["url"], 16, seconds, s["era"], s["session"])
                single = wrk(s["url"], 1, seconds, s["era"], s["session"])
                s["rps"].append(loaded["rps"])
                s["p50"].append(single["p50_ms"])
                s["p99"].append(single["p99_ms"])
                s["errors"] += loaded["errors"] + single["errors"]
    finally:
        for s in servers:
            stop(s["proc"], kill=True)
    return {s["label"]: {"label": s["label"], "server": s["kind"], "era": s["era"], "rps_c16": summary(s["rps"]),
                         "p50_ms_c1": summary(s["p50"]), "p99_ms_c1": summary(s["p99"]), "non_2xx": s["errors"]}
            for s in servers}


def ratio_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ours = results["triomcp modern"]
    rows = []
    for name, other, key, goal, better in [
        ("req/s vs SDK on Hypercorn-trio", "SDK on Hypercorn-trio", "rps_c16", 1.8, "higher"),
        ("req/s vs SDK on Uvicorn", "SDK on Uvicorn", "rps_c16", 1.0, "higher"),
        ("req/s vs bare floor", "floor: bare Hypercorn-trio JSON", "rps_c16", 0.85, "higher"),
        ("p50 (c=1) vs bare floor", "floor: bare Hypercorn-trio JSON", "p50_ms_c1", 1.15, "lower"),
    ]:
        value = ours[key]["median"] / results[other][key]["median"]
        met = value >= goal if better == "higher" else value <= goal
        rows.append({"ratio": name, "measured": round(value, 3), "goal": f"{'>=' if better == 'higher' else '<='} {goal}",
                     "met": met})
    return rows


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(labels, [results[k]["rps_c16"]["median"] for k in labels], color="#4477aa")
    left.set_xlabel("tools/call per second, 16 connections (median)")
    right.barh(labels, [results[k]["p50_ms_c1"]["median"] for k in labels], color="#cc6677")
    right.set_xlabel("p50 latency, 1 connection (ms, median)")
    right.set_yticklabels([])
    fig.suptitle("trivial MCP tools/call, one machine, load generator in its own process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions (under a minute)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (Debian: apt-get install -y wrk)")
    reps, seconds = (2, 1.0) if args.quick else (3, 5.0)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{reps} repetitions of {seconds:.0f}s per measurement after a 1s warm-up (excluded); "
          "servers interleaved within each repetition")
    results = measure_all(CASES, reps=reps, seconds=seconds)
    print()
    print(f"{'server':36} {'req/s c=16 (min/med/max)':>28} {'p50 ms c=1':>12} {'p99 ms c=1':>12} {'non-2xx':>8}")
    for label, r in results.items():
        rps = r["rps_c16"]
        print(f"{label:36} {rps['min']:8.0f} {rps['median']:8.0f} {rps['max']:8.0f}   "
              f"{r['p50_ms_c1']['median']:12.3f} {r['p99_ms_c1']['median']:12.3f} {r['non_2xx']:8.0f}")
    rows = ratio_table(results)
    print()
    print(f"{'ratio (triomcp modern / other)':36} {'measured':>9} {'goal':>8}  met")
    for row in rows:
        print(f"{row['ratio']:36} {row['measured']:9.3f} {row['goal']:>8}  {'yes' if row['met'] else 'NO'}")

    import trio

    from bench.taskqueue_local import measure as queue_measure

    queue = [trio.run(queue_measure, 2000 if args.quick else 4000, 16, "full") for _ in range(reps)]
    tps = summary([q["tasks_per_s"] for q in queue])
    print()
    print(f"durable task queue, local, fsync per commit: {tps['min']:.0f} / {tps['median']:.0f} / {tps['max']:.0f} "
          f"tasks/s (min/median/max; goal >= 2000)")
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": {"cores": os.cpu_count(), "loadavg": load}, "quick": args.quick, "repetitions": reps,
              "seconds": seconds, "results": results, "ratios": rows, "taskqueue_local_tasks_per_s": tps,
              "command": "make bench" + (" QUICK=1" if args.quick else ""),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (RESULTS / "foundation.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, RESULTS / "foundation.png")
    print(f"\nwrote {RESULTS / 'foundation.json'} and {RESULTS / 'foundation.png'}")

    print("\n== part 2: an MCP tool call that makes one libp2p round trip (bench/bridge.py) ==", flush=True)
    from bench import bridge

    bridge.main(["--quick"] if args.quick else [])
    print("\n== part 3: mesh size (bench/mesh_size.py) ==", flush=True)
    from bench import mesh_size

    mesh_size.main(["--quick"] if args.quick else [])


if __name__ == "__main__":
    main()
