"""``make bench`` part 4: what a request forwarded to the node holding it costs, beside the same
request served where it landed.

    .venv/bin/python -m bench relay [--quick]      (or: .venv/bin/python -m bench.relay [--quick])

Two ``triomcp serve`` processes, A and B, meshed over libp2p on 127.0.0.1 (they authorize each
other; B bootstraps to A), each on its own HTTP port; the load generator (wrk, harness/wrk_call.lua)
is its own process. A holds what the requests name, so a request sent to A is served there
(local) and the same request sent to B is relayed by B to A as HTTP/1.1 over a pooled libp2p
stream and its response streamed back (forwarded; ``triomcp.server.relay``). Two kinds:

- legacy: ``tools/call`` of ``test_simple_text`` (``mcp.conformance_fixtures``) in a 2025-11-25
  session opened on A (its ``Mcp-Session-Id`` carries A's owner tag);
- modern: a stateless 2026-07-28 ``tools/call`` of ``taskqueue_get`` naming a task submitted on A
  (``task_type`` "bench.never": no handler, it stays queued).

Every design is warmed up (excluded); then each round measures the four (kind, design) pairs in
turn, starting with a different one each round (local and forwarded alternate), at 16 connections
(calls/s and p50) and at 1 connection (p50: the latency one request adds, no queueing); the
medians of the rounds are compared. Goal: a forwarded request costs at most one libp2p round trip
more than a local one: p50 ratio (forwarded / local, 16 connections) <= 1.5 and calls/s ratio
>= 0.6. Every answer must be a 200 with a result (wrk_call.lua sorts them); the table says when
one was not.

The nodes run ``triomcp serve`` through :func:`node_main`, which only also writes B's relay
counters (libp2p streams its HTTP client opened, requests relayed, relays failed) to a file
every 0.2 s, so the benchmark can say how many streams the forwarded requests used.
Results: bench/results/relay.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.stats import quick_run, rotated, summary
from harness import wrk
from harness.balancer import p2p_status
from harness.mcp_http import legacy_headers, modern_call, open_session, structured, tool_call
from harness.measure import settle
from harness.procs import Process, env_for, free_port, spawn, stop, wait_for_announce, wait_http, wait_until
from triomcp._owner import owner_tag, tag_of
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONNECTIONS = 16
P50_RATIO_GOAL = 1.5
"""forwarded / local p50 at 16 connections: at most this."""
RPS_RATIO_GOAL = 0.6
"""forwarded / local calls/s at 16 connections: at least this."""
COUNTERS_EVERY = 0.2
"""How often a node writes its relay counters (seconds)."""
KINDS = ("legacy tools/call", "modern taskqueue_get")
DESIGNS = ("local", "forwarded")


# -- the nodes -----------------------------------------------------------------------------------

def _record_instances(cls: type, into: list[Any]) -> None:
    """Append every instance of ``cls`` made from now on to ``into``."""
    original: Any = cls.__dict__["__init__"]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        into.append(self)

    cls.__init__ = init  # type: ignore[misc]


def _counters(pools: list[Any], relays: list[Any]) -> dict[str, int]:
    return {"streams_opened": sum(int(getattr(p, "opened", 0)) for p in pools),
            "relayed": sum(int(getattr(getattr(r, "statistics", None), "relayed", 0)) for r in relays),
            "relay_failed": sum(int(getattr(getattr(r, "statistics", None), "failed", 0)) for r in relays)}


def _write_counters(path: Path, pools: list[Any], relays: list[Any]) -> None:
    last: dict[str, int] | None = None
    while True:
        now = _counters(pools, relays)
        if now != last:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(now))
            tmp.replace(path)
            last = now
        time.sleep(COUNTERS_EVERY)


def node_main(counters: Path, bind: str) -> None:
    """``triomcp serve --bind BIND``, writing its relay counters to ``counters`` (JSON) as they change.

    Reading them takes one daemon thread waking every 0.2 s; the server is not otherwise touched."""
    from triomcp.cli import main as triomcp_main

    try:
        from triomcp.p2p.http import HttpStreams
        from triomcp.server.relay import Relay
    except ImportError:  # moved: serve without counting (the benchmark then reports no counters)
        pass
    else:
        pools: list[Any] = []
        relays: list[Any] = []
        _record_instances(HttpStreams, pools)
        _record_instances(Relay, relays)
        threading.Thread(target=_write_counters, args=(counters, pools, relays), daemon=True).start()
    triomcp_main(["serve", "--bind", bind])


@dataclass
class Node:
    name: str
    data: Path
    peer_id: str
    port: int
    proc: Process | None = None
    multiaddr: str = ""
    log_level: str = "WARNING"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counters_file(self) -> Path:
        return self.data / "relay-counters.json"

    def counters(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.counters_file.read_text()).items()}
        except (OSError, ValueError):
            return {"streams_opened": 0, "relayed": 0, "relay_failed": 0}

    def settled_counters(self, limit: float = 3.0) -> dict[str, int]:
        """The counters once they stopped changing (requests still in flight have ended), at most ``limit`` s."""
        deadline = time.monotonic() + limit
        last = self.counters()
        while time.monotonic() < deadline:
            time.sleep(COUNTERS_EVERY * 2)
            now = self.counters()
            if now == last:
                break
            last = now
        return last

    def start(self, bootstrap: list[str]) -> None:
        env = env_for(self.data, self.name, log_level=self.log_level, mcp={"conformance_fixtures": True},
                      taskqueue={"enabled": True, "lease_seconds": 2.0}, p2p__bootstrap=bootstrap)
        self.proc = spawn([sys.executable, "-m", "bench.relay", "node", str(self.counters_file),
                           f"127.0.0.1:{self.port}"], env, log=self.data.parent / f"{self.name}.log")

    def ready(self) -> None:
        assert self.proc is not None
        self.multiaddr = str(wait_for_announce(self.data, self.proc)["multiaddrs"][0])
        wait_http(self.url, self.proc)


@contextlib.contextmanager
def mesh(work: Path, log_level: str = "WARNING") -> Iterator[tuple[Node, Node]]:
    """A and B, each authorizing the other, B bootstrapped to A; once both are connected."""
    nodes = []
    for name in ("a", "b"):
        data = work / name
        nodes.append(Node(name, data, peer_id_of(load_or_create_identity(data / "identity.key")), free_port(),
                          log_level=log_level))
    a, b = nodes
    while b.port == a.port:
        b.port = free_port()
    AuthorizedPeers(a.data / "authorized_peers").authorize(b.peer_id, "b")
    AuthorizedPeers(b.data / "authorized_peers").authorize(a.peer_id, "a")
    try:
        a.start([])
        a.ready()
        b.start([a.multiaddr])
        b.ready()
        with httpx.Client(timeout=5) as client:
            for node, other in ((a, b), (b, a)):
                assert node.proc is not None

                def linked(node: Node = node, other: Node = other) -> bool | None:
                    try:
                        return True if other.peer_id in p2p_status(client, node.url)["connected_peers"] else None
                    except (httpx.HTTPError, RuntimeError, ValueError):
                        return None

                wait_until(linked, node.proc, what=f"{node.name} to connect to {other.name}", timeout=30, interval=0.1)
        yield a, b
    finally:
        for node in nodes:
            if node.proc is not None:
                stop(node.proc, kill=True)


# -- the load ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    kind: str
    design: str
    url: str
    tool: str
    arguments: dict[str, Any]
    session: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}, {self.design}"


@dataclass(frozen=True)
class Run:
    """One wrk run: its parsed report plus the answer counts and request total wrk_call.lua and wrk printed."""

    result: wrk.WrkResult
    requests: int
    served: int
    refused: int
    failed: int

    @property
    def bad(self) -> int:
        """Answers that were not a 200 with a result, and socket errors."""
        return self.refused + self.failed + self.result.socket_errors_total


def load(case: Case, connections: int, seconds: float) -> Run:
    env = {"TOOL": case.tool, "ARGS": json.dumps(case.arguments, separators=(",", ":")), "SESSION": case.session}
    out = wrk.report(case.url, wrk.CALL_SCRIPT, connections=connections, seconds=seconds, env=env,
                     request_timeout=10)
    result = wrk.parse(out)
    total = re.search(r"(\d+) requests in", out)
    answers = re.search(r"ANSWERS served (\d+) refused (\d+) failed (\d+)", out)
    if total is None or answers is None:
        raise RuntimeError(f"wrk printed no request count or answers: {out[-2000:]}")
    served, refused, failed = (int(n) for n in answers.groups())
    return Run(result, int(total.group(1)), served, refused, failed)


def _check(case: Case) -> None:
    """One request of ``case`` by httpx: a 200 with a result, else stop before measuring anything."""
    if case.session:
        headers = legacy_headers(case.session, "2025-11-25")
        body = tool_call(case.tool, case.arguments, 1)
    else:
        headers, body = modern_call(case.tool, case.arguments)
    reply = httpx.post(f"{case.url}/mcp", headers=headers, json=body, timeout=10)
    if reply.status_code != 200 or "result" not in reply.json() or reply.json()["result"].get("isError"):
        raise RuntimeError(f"{case.label}: {reply.status_code} {reply.text[:500]}")


def cases_for(a: Node, b: Node) -> list[Case]:
    """The four (kind, design) pairs, local and forwarded alternating, for what A holds."""
    own = owner_tag(a.peer_id)
    session = open_session(a.url, "2025-11-25")["mcp-session-id"]
    headers, body = modern_call("taskqueue_submit", {"task_type": "bench.never", "payload": {}})
    task_id = str(structured(httpx.post(f"{a.url}/mcp", headers=headers, json=body, timeout=10))["task_id"])
    if tag_of(session) != own or tag_of(task_id) != own:
        raise RuntimeError(f"A's ids do not carry A's owner tag {own}: session {session}, task {task_id}")
    cases = []
    for kind in KINDS:
        for design, node in zip(DESIGNS, (a, b), strict=True):
            if kind.startswith("legacy"):
                cases.append(Case(kind, design, node.url, "test_simple_text", {}, session))
            else:
                cases.append(Case(kind, design, node.url, "taskqueue_get", {"task_id": task_id}))
    return cases


def measure(*, rounds: int, seconds: float, single_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, mesh(Path(tmp)) as (a, b):
        cases = cases_for(a, b)
        before = b.counters()
        for case in cases:
            _check(case)
        deadline = time.monotonic() + 5
        while b.counters()["relayed"] - before["relayed"] < 2 and time.monotonic() < deadline:
            time.sleep(COUNTERS_EVERY / 2)  # B writes its counters every COUNTERS_EVERY
        counting = b.counters_file.exists()
        if counting and b.counters()["relayed"] - before["relayed"] < 2:
            raise RuntimeError(f"B relayed no request to A: counters {before} -> {b.counters()}")
        pids = [n.proc.pid for n in (a, b) if n.proc is not None]
        for case in cases:  # warm-up, excluded (the forwarded ones fill B's stream pool)
            load(case, CONNECTIONS, 1)
        warm = b.settled_counters()
        runs: dict[str, dict[str, list[Any]]] = {c.label: {"c16": [], "c1": [], "streams": [], "relayed": []}
                                                 for c in cases}
        start = warm
        for rnd in range(rounds):
            for case in rotated(cases, rnd):
                settle(pids)
                loaded = load(case, CONNECTIONS, seconds)
                single = load(case, 1, single_seconds)
                end = b.settled_counters()  # includes the relays still in flight when wrk stopped
                runs[case.label]["c16"].append(loaded)
                runs[case.label]["c1"].append(single)
                runs[case.label]["streams"].append(end["streams_opened"] - start["streams_opened"])
                runs[case.label]["relayed"].append(end["relayed"] - start["relayed"])
                start = end
            print(f"  round {rnd + 1}/{rounds} done", file=sys.stderr, flush=True)
        final = b.settled_counters()
    results: dict[str, Any] = {}
    for case in cases:
        r = runs[case.label]
        c16: list[Run] = r["c16"]
        c1: list[Run] = r["c1"]
        every = c16 + c1
        results[case.label] = {
            "kind": case.kind, "design": case.design, "tool": case.tool,
            "rps_c16": summary([x.result.rps for x in c16]),
            "p50_ms_c16": summary([x.result.p50_ms for x in c16]),
            "p99_ms_c16": summary([x.result.p99_ms for x in c16]),
            "p50_ms_c1": summary([x.result.p50_ms for x in c1]),
            "per_round": {"rps_c16": [x.result.rps for x in c16], "p50_ms_c16": [x.result.p50_ms for x in c16],
                          "p50_ms_c1": [x.result.p50_ms for x in c1]},
            "requests": sum(x.requests for x in every), "served": sum(x.served for x in every),
            "refused": sum(x.refused for x in every), "failed": sum(x.failed for x in every),
            "non_2xx": sum(x.result.non_2xx for x in every),
            "socket_errors": sum(x.result.socket_errors_total for x in every),
            "b_streams_opened": sum(r["streams"]), "b_relayed": sum(r["relayed"]),
        }
    return {"results": results, "b_counters": {"counted": counting, "after_checks_and_warmup": warm, "final": final}}


def ratio_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        local, fwd = results[f"{kind}, local"], results[f"{kind}, forwarded"]
        p50 = fwd["p50_ms_c16"]["median"] / local["p50_ms_c16"]["median"]
        rps = fwd["rps_c16"]["median"] / local["rps_c16"]["median"]
        bad = sum(r[k] for r in (local, fwd) for k in ("refused", "failed", "socket_errors"))

        def paired(key: str, local: dict[str, Any] = local, fwd: dict[str, Any] = fwd) -> float:
            """The median over rounds of forwarded / local within the same round."""
            pairs = zip(fwd["per_round"][key], local["per_round"][key], strict=True)
            return round(float(statistics.median(f / lo for f, lo in pairs)), 3)

        rows.append({
            "kind": kind,
            "local_p50_ms": local["p50_ms_c16"]["median"], "forwarded_p50_ms": fwd["p50_ms_c16"]["median"],
            "p50_ratio": round(p50, 3), "p50_ratio_paired": paired("p50_ms_c16"), "p50_goal": f"<= {P50_RATIO_GOAL}", "p50_met": p50 <= P50_RATIO_GOAL,
            "local_rps": local["rps_c16"]["median"], "forwarded_rps": fwd["rps_c16"]["median"],
            "rps_ratio": round(rps, 3), "rps_ratio_paired": paired("rps_c16"), "rps_goal": f">= {RPS_RATIO_GOAL}", "rps_met": rps >= RPS_RATIO_GOAL,
            "local_p50_ms_c1": local["p50_ms_c1"]["median"], "forwarded_p50_ms_c1": fwd["p50_ms_c1"]["median"],
            "added_ms_c1": round(fwd["p50_ms_c1"]["median"] - local["p50_ms_c1"]["median"], 3),
            "all_answers_200": bad == 0,
        })
    return rows


def print_report(report: dict[str, Any]) -> None:
    results, rows = report["results"], report["ratios"]
    print()
    print(f"{'kind':22} {'p50 ms local':>12} {'forwarded':>10} {'ratio':>6} {'<=1.5':>5}   "
          f"{'calls/s local':>13} {'forwarded':>10} {'ratio':>6} {'>=0.6':>5}   {'p50 c=1: local':>14} "
          f"{'forwarded':>10} {'added':>7}")
    for row in rows:
        print(f"{row['kind']:22} {row['local_p50_ms']:12.2f} {row['forwarded_p50_ms']:10.2f} "
              f"{row['p50_ratio']:6.2f} {'yes' if row['p50_met'] else 'NO':>5}   {row['local_rps']:13.0f} "
              f"{row['forwarded_rps']:10.0f} {row['rps_ratio']:6.2f} {'yes' if row['rps_met'] else 'NO':>5}   "
              f"{row['local_p50_ms_c1']:14.2f} {row['forwarded_p50_ms_c1']:10.2f} {row['added_ms_c1']:7.2f}")
    print(f"\n(16 connections unless c=1; medians of {report['rounds']} rounds; ms)")
    print()
    print(f"{'run':40} {'requests':>9} {'200+result':>10} {'not':>5} {'non-2xx':>7} {'socket err':>10} "
          f"{'relayed by B':>12} {'B opened streams':>16}")
    for label, r in results.items():
        bad = r["refused"] + r["failed"]
        print(f"{label:40} {r['requests']:9d} {r['served']:10d} {bad:5d} {r['non_2xx']:7d} {r['socket_errors']:10d} "
              f"{r['b_relayed']:12d} {r['b_streams_opened']:16d}")
    final = report["b_counters"]["final"]
    if not report["b_counters"]["counted"]:
        print("\nB's relay counters are not available (triomcp.p2p.http.HttpStreams or triomcp.server.relay.Relay "
              "moved): the relayed and stream columns are 0")
    print(f"\nB's HTTP-over-libp2p client opened {final['streams_opened']} streams in all "
          f"(checks and warm-up: {report['b_counters']['after_checks_and_warmup']['streams_opened']}) for "
          f"{final['relayed']} relayed requests; {final['relay_failed']} relays failed.")
    if all(row["all_answers_200"] for row in rows):
        print("every answer was a 200 with a result")
    else:
        print("SOME ANSWERS FAILED (not a 200 with a result, or a socket error): the figures above are not valid")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quick = quick_run(__doc__, argv, quick="shorter runs, fewer rounds (about 30 s)")
    rounds, seconds, single = (2, 1.0, 1.0) if quick else (5, 3.0, 1.0)
    load_avg = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
          f"{rounds} rounds of {seconds:.0f}s at {CONNECTIONS} connections and {single:.0f}s at 1, per design, "
          "after a 1s warm-up (excluded); local and forwarded interleaved", flush=True)
    started = time.monotonic()
    measured = measure(rounds=rounds, seconds=seconds, single_seconds=single)
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg": load_avg}, "quick": quick, "rounds": rounds,
        "seconds_c16": seconds, "seconds_c1": single, "connections": CONNECTIONS, "interleaved": True,
        **measured, "command": "python -m bench relay" + (" --quick" if quick else ""),
        "wall_seconds": round(time.monotonic() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["ratios"] = ratio_table(report["results"])
    report["all_answers_200"] = all(row["all_answers_200"] for row in report["ratios"])
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "relay.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'relay.json'}")
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["node"]:  # a node of the mesh (see node_main)
        node_main(Path(sys.argv[2]), sys.argv[3])
    else:
        main()
