"""``make bench`` part 3: how a mesh of triomcp nodes behaves as it grows (2, 8, 32, 64 nodes).

    .venv/bin/python -m bench.mesh_size [--quick]

Every node is a real ``triomcp serve`` process on this machine (HTTP and libp2p on 127.0.0.1),
with its own data dir; all of them authorize each other (identities made up front). Node 0
starts first; the others start together with node 0 as their only bootstrap peer. Measured:

- startup: process start until ``/readyz`` answers 200 (the others start concurrently, so on a
  small machine they compete for the CPU: that is part of the figure);
- discovery: time until every node has as many connections as it keeps (all the others, or
  ``p2p.connections_low`` of them), starting from the bootstrap address only (peer exchange fills
  in the rest), and until every node reaches node 0;
- work: every node submits K ``stamp`` tasks (the handler names the node that ran it and when it
  started) to its own queue; tasks/s from the first submit to the last result, how the tasks spread
  over the nodes (ideal: K each; owners run their own work while their workers are free, and
  announce the rest), the share that ran elsewhere, the time from submit to a remote worker
  starting (p50/p99), and the mesh's messages per task (announcements published, deliveries of
  them, claims, from every node's ``p2p_status``);
- memory: resident set size (VmRSS) of each node after startup and after the work;
- idle cost: CPU the whole mesh uses over 30 s with nothing to do, 10 s after the mesh formed
  (percent of one core; 3 s, 2 s after, with ``--quick``), from the nanosecond CPU times of every
  thread (``cpu_seconds_exact``): clock ticks of 10 ms over a few seconds could not tell a 2-node
  mesh's 0.0 % from its 0.4 %, and an idle node's work comes in bursts (a peer exchange every 10 s,
  a GossipSub heartbeat every second) that a short window catches or misses.

Results: bench/results/mesh.json and mesh.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from harness.mcp_http import modern_call
from harness.measure import cpu_seconds_exact, rss_kib
from harness.procs import TRIOMCP, Process, env_for, free_port, spawn, stop, wait_http_async
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.settings import P2PSettings

HERE = Path(__file__).resolve().parent
NODE_NAME = "TRIOMCP_TEST_NODE_NAME"


async def stamp(task: Any, ctx: Any) -> dict[str, Any]:
    """The task handler of the work phase: which node ran it, and when it started (epoch seconds)."""
    started = time.time()
    await trio.sleep(float((task.payload or {}).get("seconds", 0.0)))
    return {"node": os.environ.get(NODE_NAME), "started": started}
RESULTS = HERE / "results"
READY_TIMEOUT = 400.0
CONNECTIONS_LOW = P2PSettings().connections_low
IDLE_SECONDS = 30.0
SETTLE_SECONDS = 10.0
HOT_TASKS = 80
"""Tasks each hot node (one node in eight) submits in the second work phase."""
HOT_SECONDS = 1.0
"""How long each of them runs: more than the hot node's own four workers take at once."""


def rss_mib(pid: int) -> float:
    kib = rss_kib(pid)
    return float("nan") if kib is None else kib / 1024


REFUSAL_RETRIES = 30
"""Times one call is sent again after a 503 -32010 (the node is past ``http.max_requests_in_progress``:
a burst of 40 ``taskqueue_wait`` from one client is more than its 32 slots), after its Retry-After."""
REFUSED = {"calls": 0}
"""Refusals met so far in this process (printed with the results)."""


async def call(client: httpx.AsyncClient, url: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    headers, body = modern_call(tool, arguments, accept="application/json")
    for _ in range(REFUSAL_RETRIES):
        response = await client.post(f"{url}/mcp", json=body, headers=headers)
        reply = response.json()
        if response.status_code != 503 or (reply.get("error") or {}).get("code") != -32010:
            break
        REFUSED["calls"] += 1  # refused for load, as a client should be told: it retries when told to
        await trio.sleep(float(response.headers.get("retry-after", "1")))
    result = reply.get("result") or {}
    if result.get("isError") or "structuredContent" not in result:
        raise RuntimeError(f"{tool} on {url}: {reply}")
    return dict(result["structuredContent"])


class Mesh:
    def __init__(self, size: int, work: Path) -> None:
        self.size = size
        self.work = work
        self.dirs = [work / f"node-{i}" for i in range(size)]
        self.ids = [peer_id_of(load_or_create_identity(d / "identity.key")) for d in self.dirs]
        for d in self.dirs:  # everyone trusts everyone
            authorized = AuthorizedPeers(d / "authorized_peers")
            for i, pid in enumerate(self.ids):
                if self.dirs[i] != d:
                    authorized.authorize(pid, f"node-{i}")
        self.ports = [free_port() for _ in range(size)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.procs: list[Process] = []
        self.started: list[float] = []

    def spawn(self, i: int, bootstrap: list[str]) -> None:
        env = env_for(self.dirs[i], str(i), log_level="WARNING", taskqueue__enabled=True,
                      p2p__bootstrap=bootstrap, taskqueue__lease_seconds=10,
                      taskqueue__handlers={"stamp": "bench.mesh_size:stamp"})
        self.started.append(time.monotonic())
        self.procs.append(spawn([*TRIOMCP, "serve", "--bind", f"127.0.0.1:{self.ports[i]}"], env,
                                log=self.work / f"node-{i}.log"))  # kept with the data dirs

    async def wait_ready(self, client: httpx.AsyncClient, i: int) -> float:
        """Seconds from node ``i``'s start until its ``/readyz`` answered 200."""
        with trio.fail_after(READY_TIMEOUT):
            await wait_http_async(client, self.urls[i], self.procs[i])
        return time.monotonic() - self.started[i]

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


async def measure(size: int, tasks_per_node: int, quick: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"triomcp-mesh-{size}-"))
    mesh = Mesh(size, work)
    out: dict[str, Any] = {"nodes": size, "tasks_per_node": tasks_per_node}
    refused_before = REFUSED["calls"]
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            mesh.spawn(0, [])
            startup = [await mesh.wait_ready(client, 0)]
            first = json.loads((mesh.dirs[0] / "announce.json").read_text())["multiaddrs"][0]
            t0 = time.monotonic()
            for i in range(1, size):
                mesh.spawn(i, [first])
            ready = [0.0] * size

            async def ready_one(i: int) -> None:
                ready[i] = await mesh.wait_ready(client, i)

            async with trio.open_nursery() as nursery:
                for i in range(1, size):
                    nursery.start_soon(ready_one, i)
            startup += ready[1:]
            out["startup_s"] = {"median": statistics.median(startup), "max": max(startup)}
            out["rss_mib_after_start"] = statistics.median(rss_mib(p.pid) for p in mesh.procs)

            # Discovery: poll every node's connected peers (bounded by the deadline).
            keeps = min(size - 1, CONNECTIONS_LOW)
            star_at = full_at = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and full_at is None:
                statuses = [await call(client, u, "p2p_status", {}) for u in mesh.urls]
                connected = [set(s["connected_peers"]) for s in statuses]
                now = time.monotonic() - t0
                if star_at is None and all(mesh.ids[0] in c for c in connected[1:]):
                    star_at = now
                if all(len(c & set(mesh.ids)) >= keeps for c in connected):
                    full_at = now
                await trio.sleep(0.1)
            out["to_bootstrap_node_s"] = star_at
            out["full_mesh_s"] = full_at
            out["links"] = sum(len(c & set(mesh.ids)) for c in connected) // 2

            # Idle cost: CPU the whole mesh burns doing nothing (keep-alives, long-polling claims).
            settle, idle = (2.0, 3.0) if quick else (SETTLE_SECONDS, IDLE_SECONDS)
            await trio.sleep(settle)  # the new connections' first claims and exchanges are done
            before = sum(cpu_seconds_exact(p.pid) for p in mesh.procs)
            await trio.sleep(idle)
            out["idle_cpu_percent_total"] = (sum(cpu_seconds_exact(p.pid) for p in mesh.procs) - before) / idle * 100

            # Work: every node submits to its own queue (no-op tasks: how fast the mesh goes), then a
            # few hot nodes submit tasks that take a while (the rest of the mesh must take them).
            out.update(await run_work(client, mesh, list(range(size)), tasks_per_node, 0.0))
            hot = list(range(max(1, size // 8)))
            out["hot"] = await run_work(client, mesh, hot, HOT_TASKS, HOT_SECONDS)
            out["hot"]["owners"] = len(hot)
            out["rss_mib_after_work"] = statistics.median(rss_mib(p.pid) for p in mesh.procs)
            out["calls_refused_for_load"] = REFUSED["calls"] - refused_before
    finally:
        mesh.stop()
    return out


async def run_work(client: httpx.AsyncClient, mesh: Mesh, owners: list[int], per_owner: int,
               seconds: float) -> dict[str, Any]:
    """``per_owner`` ``stamp`` tasks of ``seconds`` each submitted to each of ``owners``; what came of them."""
    size = mesh.size
    before_mesh = [(await call(client, u, "p2p_status", {})).get("mesh") or {} for u in mesh.urls]
    ids: list[tuple[int, str]] = []
    start = time.monotonic()

    async def submit_all(i: int) -> None:
        for _ in range(per_owner):
            sub = await call(client, mesh.urls[i], "taskqueue_submit",
                             {"task_type": "stamp", "payload": {"seconds": seconds}})
            ids.append((i, sub["task_id"]))

    async with trio.open_nursery() as nursery:
        for i in owners:
            nursery.start_soon(submit_all, i)
    ran_on = [0] * size
    remote_waits: list[float] = []
    failures = elsewhere = 0
    limiter = trio.CapacityLimiter(32)

    async def wait_one(i: int, task_id: str) -> None:
        nonlocal failures, elsewhere
        async with limiter:
            done = await call(client, mesh.urls[i], "taskqueue_wait", {"task_id": task_id, "timeout_s": 120})
        task = done["task"]
        if task["state"] != "succeeded":
            failures += 1
            return
        runner = int(task["result"]["node"])
        ran_on[runner] += 1
        if runner != i:
            elsewhere += 1
            remote_waits.append(task["result"]["started"] - task["created_at"])

    async with trio.open_nursery() as nursery:
        for i, task_id in ids:
            nursery.start_soon(wait_one, i, task_id)
    elapsed = time.monotonic() - start
    after_mesh = [(await call(client, u, "p2p_status", {})).get("mesh") or {} for u in mesh.urls]
    ideal = len(ids) / size
    out: dict[str, Any] = {"tasks": len(ids), "failed_tasks": failures, "tasks_per_s": len(ids) / elapsed,
                           "task_seconds": seconds}
    out["spread"] = {"min": min(ran_on), "max": max(ran_on), "stdev": statistics.pstdev(ran_on), "ideal": ideal,
                     "min_share": min(ran_on) / ideal, "max_share": max(ran_on) / ideal,
                     "nodes_that_ran": sum(1 for n in ran_on if n)}
    out["ran_elsewhere_share"] = elsewhere / max(1, len(ids))
    remote_waits.sort()
    out["remote_start_ms"] = None if not remote_waits else {
        "p50": 1000 * remote_waits[len(remote_waits) // 2],
        "p99": 1000 * remote_waits[min(len(remote_waits) - 1, int(len(remote_waits) * 0.99))],
        "count": len(remote_waits)}

    def delta(key: str, sub: str | None = None) -> int:
        total = 0
        for b, a in zip(before_mesh, after_mesh, strict=True):
            if sub is not None:
                a, b = a.get(sub) or {}, b.get(sub) or {}
            total += int(a.get(key, 0)) - int(b.get(key, 0))
        return total

    tasks = max(1, len(ids))
    out["messages_per_task"] = {"announcements": delta("announced") / tasks,
                                "deliveries": delta("delivered", "gossip") / tasks,
                                "claims": delta("claims") / tasks, "empty_claims": delta("empty_claims") / tasks}
    return out


def growth(xs: list[int], ys: list[float]) -> str:
    """How y grows with x between the smallest and the largest mesh."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y and y > 0]  # skip NaN and zero
    if len(points) < 2:
        return "n/a"
    (x0, y0), (x1, y1) = points[0], points[-1]
    x_ratio, y_ratio = x1 / x0, y1 / y0
    if y_ratio < 0.8:
        return f"falls (x{y_ratio:.2f} for x{x_ratio:.0f} nodes)"
    if y_ratio < 1.25:
        return f"flat (x{y_ratio:.2f} for x{x_ratio:.0f} nodes)"
    exponent = math.log(y_ratio) / math.log(x_ratio)
    kind = "sub-linear" if exponent < 0.85 else "about linear" if exponent < 1.2 else "worse than linear"
    return f"{kind} (x{y_ratio:.2f} for x{x_ratio:.0f} nodes, exponent {exponent:.2f})"


def run(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    if not sizes:
        sizes = [2, 8] if quick else [2, 8, 32, 64]  # 64 processes take a few minutes to start on 2 cores
    per_node = 10 if quick else 40
    rows = []
    for size in sizes:
        print(f"mesh of {size} nodes ...", flush=True)
        rows.append(trio.run(measure, size, per_node, quick))
    load = os.getloadavg()
    return {"machine": {"cores": os.cpu_count(), "loadavg": list(load)}, "quick": quick, "rows": rows,
            "note": "all nodes are processes on one machine; the non-bootstrap nodes start concurrently",
            "command": "make bench" + (" QUICK=1" if quick else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _exponent(xs: list[int], ys: list[float]) -> float | None:
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y and y > 0]
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points[0], points[-1]
    return math.log(y1 / y0) / math.log(x1 / x0)


def goals(report: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """Issue 15's goals for this part, each as (goal, measured, target, reached)."""
    rows = {r["nodes"]: r for r in report["rows"]}
    xs = sorted(rows)
    out: list[tuple[str, str, str, bool | None]] = []
    exponent = _exponent(xs, [rows[x]["idle_cpu_percent_total"] for x in xs])
    out.append((f"idle CPU growth exponent, {xs[0]} to {xs[-1]} nodes",
                "n/a" if exponent is None else f"{exponent:.2f}", "<= 1.05",
                None if exponent is None else exponent <= 1.05))
    for n in (32, 64):
        if n in rows:
            sp = rows[n]["spread"]
            out.append((f"each node's share of the work at {n} nodes", f"{sp['min_share']:.2f}..{sp['max_share']:.2f}",
                        "0.5..1.5", sp["min_share"] >= 0.5 and sp["max_share"] <= 1.5))
    if 2 in rows and 32 in rows:
        ratio = rows[32]["tasks_per_s"] / rows[2]["tasks_per_s"]
        out.append(("tasks/s at 32 nodes / at 2 nodes", f"{ratio:.2f}", ">= 0.9", ratio >= 0.9))
    return out


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\ncores: {m['cores']}, load average: {', '.join(f'{x:.2f}' for x in m['loadavg'])}; {report['note']}")
    print(f"\n{'nodes':>5} {'start p50/max s':>16} {'to node 0 s':>12} {'connected s':>12} {'links':>6} {'tasks/s':>8} "
          f"{'share min..max':>15} {'elsewhere':>9} {'remote start p50/p99 ms':>24} {'msgs/task a/d/c/e':>22} "
          f"{'failed':>7} {'RSS MiB start/work':>19} {'idle CPU %':>11}")
    for r in report["rows"]:
        full = f"{r['full_mesh_s']:.2f}" if r["full_mesh_s"] is not None else "never"
        star = f"{r['to_bootstrap_node_s']:.2f}" if r["to_bootstrap_node_s"] is not None else "never"
        spread = r["spread"]
        remote = r.get("remote_start_ms")
        rs = "-" if not remote else f"{remote['p50']:.0f}/{remote['p99']:.0f} (n={remote['count']})"
        mp = r.get("messages_per_task") or {}
        msgs = "/".join(f"{mp.get(k, 0):.2f}" for k in ("announcements", "deliveries", "claims", "empty_claims"))
        print(f"{r['nodes']:>5} {r['startup_s']['median']:7.2f}/{r['startup_s']['max']:<7.2f} {star:>12} {full:>12} "
              f"{r['links']:>6} {r['tasks_per_s']:8.1f} {spread['min_share']:>7.2f}..{spread['max_share']:<6.2f} "
              f"{r.get('ran_elsewhere_share', 0):>9.2f} {rs:>24} {msgs:>22} {r['failed_tasks']:>7} "
              f"{r['rss_mib_after_start']:9.1f}/{r['rss_mib_after_work']:<9.1f} {r['idle_cpu_percent_total']:>11.1f}")
    print("msgs/task: a = announcements published, d = their deliveries (all nodes), c = claims sent, e = empty claims")
    print(f"\nhot owners: one node in eight submits {HOT_TASKS} tasks of {HOT_SECONDS * 1000:.0f} ms each; the rest "
          "of the mesh must take them")
    print(f"{'nodes':>5} {'owners':>6} {'tasks':>6} {'tasks/s':>8} {'nodes that ran':>14} {'elsewhere':>9} "
          f"{'remote start p50/p99 ms':>24} {'msgs/task a/d/c/e':>22} {'failed':>7}")
    for r in report["rows"]:
        h = r.get("hot")
        if not h:
            continue
        remote = h.get("remote_start_ms")
        rs = "-" if not remote else f"{remote['p50']:.0f}/{remote['p99']:.0f} (n={remote['count']})"
        mp = h["messages_per_task"]
        msgs = "/".join(f"{mp.get(k, 0):.2f}" for k in ("announcements", "deliveries", "claims", "empty_claims"))
        print(f"{r['nodes']:>5} {h['owners']:>6} {h['tasks']:>6} {h['tasks_per_s']:8.1f} "
              f"{h['spread']['nodes_that_ran']:>14} {h['ran_elsewhere_share']:>9.2f} {rs:>24} {msgs:>22} "
              f"{h['failed_tasks']:>7}")
    xs = [r["nodes"] for r in report["rows"]]
    print()
    figures: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("startup (max)", lambda r: r["startup_s"]["max"]),
        ("time to its connections", lambda r: r["full_mesh_s"] or float("nan")),
        ("tasks/s", lambda r: r["tasks_per_s"]), ("RSS per node", lambda r: r["rss_mib_after_work"]),
        ("idle CPU of the whole mesh", lambda r: r["idle_cpu_percent_total"])]
    for label, key in figures:
        print(f"{label}: {growth(xs, [key(r) for r in report['rows']])}")
    print(f"\n{'goal':<46} {'measured':>12} {'target':>10} reached")
    for goal, measured, target, reached in goals(report):
        print(f"{goal:<46} {measured:>12} {target:>10} {'-' if reached is None else 'yes' if reached else 'NO'}")


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    xs = [r["nodes"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    panels = [
        ("startup to ready, s (max)", [r["startup_s"]["max"] for r in rows]),
        ("time to its connections, s", [r["full_mesh_s"] if r["full_mesh_s"] is not None else float("nan") for r in rows]),
        ("tasks/s (every node submitting)", [r["tasks_per_s"] for r in rows]),
        ("RSS per node, MiB (median)", [r["rss_mib_after_work"] for r in rows]),
    ]
    for ax, (title, ys) in zip(axes, panels, strict=True):
        ax.plot(xs, ys, marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("nodes")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"triomcp mesh size ({report['command']}, {report['date']}, {report['machine']['cores']} cores, "
                 "all nodes on one machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 and 8 nodes only, fewer tasks per node")
    parser.add_argument("--sizes", type=lambda v: [int(n) for n in v.split(",")], default=None,
                        help="mesh sizes to run, comma-separated (default: 2,8,32,64; 2,8 with --quick)")
    args = parser.parse_args(argv)
    report = run(args.quick, args.sizes)
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    name = "mesh" if args.sizes is None else "mesh-" + "_".join(map(str, args.sizes))  # a part run: beside it
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / f'{name}.json'} and {RESULTS / f'{name}.png'}")
    return report


if __name__ == "__main__":
    main()
