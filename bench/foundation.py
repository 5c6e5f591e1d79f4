"""``make bench`` part 1: trivial MCP tool calls side by side, and the durable queue.

    .venv/bin/python -m bench.foundation [--quick]

triomcp in both eras (served as ``triomcp serve`` serves it, request gate included), the official
SDK on Hypercorn-trio and on Uvicorn, and a bare floor on the same server code as triomcp without
the gate (and, for reference, on plain Hypercorn; see bench/servers.py), each in its own process; the load generator (wrk) runs in its own process too.
All servers are started first and warmed up (excluded); then each repetition measures every
server in turn, starting with a different one each time, at 16 connections (requests/s) and at 1
connection (p50 and p99 latency); min/median/max are reported, and each ratio of issue 18 beside its
goal (:data:`RATIOS`). Then a second table, measured the same way: a tool call answered with SSE
(a progress event before the result) and large results (256 KiB), triomcp in both eras against
the SDK and a floor, as regression guards without goals (bench/shapes.py, its ``shapes`` key in
the results). Then no-op tasks through the local durable queue (bench/taskqueue_local.py).
Results: bench/results/foundation.json and .png.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench import shapes
from bench.stats import quick_run, rotated, summary
from bench.taskqueue_local import measure as queue_measure
from harness import wrk
from harness.mcp_http import LEGACY, modern_headers, open_session, tool_call
from harness.measure import settle
from harness.procs import Process, env_for, free_port, spawn, stop, wait_until
from triomcp.mcp.results import modern_meta

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LUA = HERE / "mcp_call.lua"
"""wrk's request: ``add`` with a new id each time, in the era MODE (legacy: in the session SESSION)."""
CASES = [
    # (label, server kind, era)
    ("triomcp modern", "triomcp", "modern"),
    ("triomcp legacy", "triomcp", "legacy"),
    ("SDK on Hypercorn-trio", "sdk-hypercorn", "modern"),
    ("SDK on Uvicorn", "sdk-uvicorn", "modern"),
    ("floor: bare Hypercorn-trio JSON", "floor", "modern"),
    ("(bare JSON on plain Hypercorn)", "floor-hypercorn", "modern"),
]
ADD = {"a": 1, "b": 2}


def start(kind: str, port: int) -> Process:
    return spawn([sys.executable, "-m", "bench.servers", kind, str(port)], env_for())


def _call_add(url: str, era: str) -> str | None:
    """One ``add`` call; the session id (legacy) or "" (modern) when it succeeded, else None."""
    if era == "legacy":
        headers = open_session(url, LEGACY)
        reply = httpx.post(f"{url}/mcp", timeout=5, headers=headers, json=tool_call("add", ADD))
        return headers["mcp-session-id"] if reply.status_code == 200 and "result" in reply.json() else None
    reply = httpx.post(f"{url}/mcp", timeout=5, headers=modern_headers("tools/call", "add"),
                       json=tool_call("add", ADD, meta=modern_meta()))
    if reply.status_code != 200:
        return None
    body = reply.json()
    assert "result" in body, body
    return ""


def ready(url: str, era: str, proc: Process, timeout: float = 30) -> str | None:
    """Wait until a tool call succeeds; returns the legacy session id when era is legacy."""

    def answered() -> str | None:
        try:
            return _call_add(url, era)
        except (httpx.HTTPError, KeyError):
            return None

    session = wait_until(answered, proc, what=f"{url} to answer add ({era})", timeout=timeout, interval=0.1)
    return session or None


def load(url: str, connections: int, seconds: float, era: str, session: str | None) -> wrk.WrkResult:
    return wrk.run(url, LUA, connections=connections, seconds=seconds, env={"MODE": era, "SESSION": session or ""})


def measure_all(cases: list[tuple[str, str, str]], *, reps: int, seconds: float) -> dict[str, dict[str, Any]]:
    """Every server started up front; then each repetition measures each of them in turn (interleaved).

    A shared machine drifts by 2x over minutes: measuring server A for a minute, then server B, would
    compare the machine at two moments. Interleaving spreads the drift over every server alike."""
    servers: list[dict[str, Any]] = []
    try:
        for label, kind, era in cases:
            port = free_port()
            servers.append({"label": label, "kind": kind, "era": era, "url": f"http://127.0.0.1:{port}",
                            "proc": start(kind, port), "rps": [], "p50": [], "p99": [], "errors": 0.0})
        for s in servers:
            s["session"] = ready(s["url"], s["era"], s["proc"])
            load(s["url"], 4, 1, s["era"], s["session"])  # warm-up, excluded
        for rep in range(reps):
            for s in rotated(servers, rep):
                settle([x["proc"].pid for x in servers])
                loaded = load(s["url"], 16, seconds, s["era"], s["session"])
                single = load(s["url"], 1, seconds, s["era"], s["session"])
                s["rps"].append(loaded.rps)
                s["p50"].append(single.p50_ms)
                s["p99"].append(single.p99_ms)
                s["errors"] += loaded.non_2xx + single.non_2xx
    finally:
        for s in servers:
            stop(s["proc"], kill=True)
    return {s["label"]: {"label": s["label"], "server": s["kind"], "era": s["era"], "rps_c16": summary(s["rps"]),
                         "p50_ms_c1": summary(s["p50"]), "p99_ms_c1": summary(s["p99"]), "non_2xx": s["errors"]}
            for s in servers}


RATIOS = [
    # (ratio, other server, measure, goal, better, where the goal comes from)
    ("req/s c=16 vs bare floor", "floor: bare Hypercorn-trio JSON", "rps_c16", 0.85, "higher", "issue 18"),
    ("p50 c=1 vs bare floor", "floor: bare Hypercorn-trio JSON", "p50_ms_c1", 1.2, "lower", "issue 18"),
    ("req/s c=16 vs SDK on Hypercorn-trio", "SDK on Hypercorn-trio", "rps_c16", 1.5, "higher", "issue 18"),
    ("req/s c=16 vs SDK on Uvicorn", "SDK on Uvicorn", "rps_c16", 1.0, "higher", "mission"),
]
"""The ratios part 1 prints, triomcp modern over another server, each beside its goal."""


def ratio_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ours = results["triomcp modern"]
    rows = []
    for name, other, key, goal, better, source in RATIOS:
        value = ours[key]["median"] / results[other][key]["median"]
        met = value >= goal if better == "higher" else value <= goal
        rows.append({"ratio": name, "measured": round(value, 3), "goal": f"{'>=' if better == 'higher' else '<='} {goal}",
                     "met": met, "source": source})
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
    plt.close(fig)


def print_report(results: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'server':36} {'req/s c=16 (min/med/max)':>28} {'p50 ms c=1':>12} {'p99 ms c=1':>12} {'non-2xx':>8}")
    for label, r in results.items():
        rps = r["rps_c16"]
        print(f"{label:36} {rps['min']:8.0f} {rps['median']:8.0f} {rps['max']:8.0f}   "
              f"{r['p50_ms_c1']['median']:12.3f} {r['p99_ms_c1']['median']:12.3f} {r['non_2xx']:8.0f}")
    print()
    print(f"{'ratio (triomcp modern / other)':40} {'measured':>9} {'goal':>8}  {'met':4} goal of")
    for row in rows:
        print(f"{row['ratio']:40} {row['measured']:9.3f} {row['goal']:>8}  {'yes' if row['met'] else 'NO':4} "
              f"{row['source']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quick = quick_run(__doc__, argv, quick="shorter runs, fewer repetitions (under a minute)")
    reps, seconds = (2, 1.0) if quick else (3, 5.0)
    load_avg = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
          f"{reps} repetitions of {seconds:.0f}s per measurement after a 1s warm-up (excluded); "
          "servers interleaved within each repetition")
    results = measure_all(CASES, reps=reps, seconds=seconds)
    rows = ratio_table(results)
    print_report(results, rows)
    shaped = shapes.measure(reps=reps, seconds=seconds)
    shapes.print_report(shaped)

    queue = [trio.run(queue_measure, 2000 if quick else 4000, 16, "full") for _ in range(reps)]
    tps = summary([q["tasks_per_s"] for q in queue])
    print()
    print(f"durable task queue, local, fsync per commit: {tps['min']:.0f} / {tps['median']:.0f} / {tps['max']:.0f} "
          f"tasks/s (min/median/max; goal >= 2000)")
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": {"cores": os.cpu_count(), "loadavg": load_avg}, "quick": quick, "repetitions": reps,
              "seconds": seconds, "results": results, "ratios": rows, "taskqueue_local_tasks_per_s": tps,
              "shapes": shaped,
              "command": "make bench" + (" QUICK=1" if quick else ""),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (RESULTS / "foundation.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, RESULTS / "foundation.png")
    print(f"\nwrote {RESULTS / 'foundation.json'} and {RESULTS / 'foundation.png'}")
    return report


if __name__ == "__main__":
    main()
