"""Durable no-op tasks per second submitted on node A and run by node B's mesh workers, beside
the same tasks run by A's own workers.

    .venv/bin/python -m bench.taskqueue_mesh [--tasks N]

A is a full triomcp service (queue, libp2p node, workers) in this process. B is measured twice:
as a second service in the same process and Trio loop (A and B share one CPU core: the same work
on the same core, once through local workers and once through MCP over libp2p), and as
``triomcp node`` in its own process (B has the machine's other core, as a peer on another
machine would have its own). A has no workers of its own, so all it queues is surplus: it announces
it over GossipSub, B's idle slots claim up to 8 tasks per call, and a busy slot records an outcome and
claims its next task in one round trip (``taskqueue_complete`` with ``claim_next``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from harness.procs import env_for, started
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.server.app import build_services
from triomcp.server.lifespan import running_services
from triomcp.settings import Settings
from triomcp.taskqueue import Task, TaskContext

WORKERS = 16


async def noop(task: Task, ctx: TaskContext) -> Any:
    return None


def _settings(data: Path, *, local_workers: int, mesh_workers: int) -> Settings:
    return Settings(
        data_dir=data, log_level="WARNING",
        p2p={"listen": ["/ip4/127.0.0.1/tcp/0"]},  # type: ignore[arg-type]
        taskqueue={"handlers": {"noop": "bench.taskqueue_mesh:noop"},  # type: ignore[arg-type]
                   "concurrency": {"*": 1, "noop": local_workers}, "mesh_concurrency": {"*": 1, "noop": mesh_workers}})


@contextlib.asynccontextmanager
async def node(settings: Settings) -> AsyncIterator[Any]:
    services = build_services(settings)
    async with running_services(services):
        yield services


async def _run(services: Any, tasks: int) -> float:
    queue = services.queue
    start = time.perf_counter()
    ids = []
    for _ in range(tasks):
        ids.append((await queue.submit("noop", {})).id)
    for task_id in ids:
        done = await queue.wait_finished(task_id)
        assert done.state.value == "succeeded", done
    return tasks / (time.perf_counter() - start)


@contextlib.contextmanager
def node_process(data: Path, a_peer: str, a_addr: str) -> Any:
    """B as ``triomcp node`` in its own process: mesh workers only, bootstrapped to A."""
    b_peer = peer_id_of(load_or_create_identity(data / "identity.key"))
    AuthorizedPeers(data / "authorized_peers").authorize(a_peer, "a")
    env = env_for(data, log_level="WARNING", p2p__bootstrap=[a_addr],
                  taskqueue__handlers={"noop": "bench.taskqueue_mesh:noop"},
                  taskqueue__concurrency={"*": 1, "noop": 0}, taskqueue__mesh_concurrency={"*": 1, "noop": WORKERS})
    with started(["node"], env):
        yield b_peer


async def measure(tasks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        async with node(_settings(base / "local", local_workers=WORKERS, mesh_workers=0)) as alone:
            await _run(alone, min(200, tasks))  # warm-up, excluded
            local = await _run(alone, tasks)
        a_settings = _settings(base / "a", local_workers=0, mesh_workers=0)
        b_settings = _settings(base / "b", local_workers=0, mesh_workers=WORKERS)
        async with node(a_settings) as a, node(b_settings) as b:
            a.node.authorized.authorize(b.node.peer_id, "b")
            b.node.authorized.authorize(a.node.peer_id, "a")
            await b.node.connect(a.node.listen_addrs()[0])
            await _run(a, min(200, tasks))  # warm-up, excluded (and the workers attach)
            mesh = await _run(a, tasks)
        async with node(_settings(base / "a2", local_workers=0, mesh_workers=0)) as a:
            with node_process(base / "b2", a.node.peer_id, str(a.node.listen_addrs()[0])) as b_peer:
                a.node.authorized.authorize(b_peer, "b")
                with trio.fail_after(120):
                    await _run(a, min(200, tasks))  # warm-up, excluded (B starts, dials A, attaches)
                    apart = await _run(a, tasks)
    return {"local": local, "mesh": mesh, "mesh_apart": apart}


def run(quick: bool) -> dict[str, Any]:
    tasks, reps = (400, 2) if quick else (1500, 3)
    runs = [trio.run(measure, tasks) for _ in range(reps)]
    local = [r["local"] for r in runs]
    mesh = [r["mesh"] for r in runs]
    apart = [r["mesh_apart"] for r in runs]

    def summary(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    ratio = statistics.median(mesh) / statistics.median(local)
    ratio_apart = statistics.median(apart) / statistics.median(local)
    return {"tasks": tasks, "repetitions": reps, "workers": WORKERS, "local_tasks_per_s": summary(local),
            "mesh_tasks_per_s": summary(mesh), "mesh_apart_tasks_per_s": summary(apart),
            "ratio": {"ratio": "mesh (B in A's process) / local tasks/s", "measured": round(ratio, 3),
                      "goal": ">= 0.8", "met": ratio >= 0.8},
            "ratio_apart": {"ratio": "mesh (B its own process) / local tasks/s", "measured": round(ratio_apart, 3),
                            "goal": ">= 0.8", "met": ratio_apart >= 0.8}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    report = run(parser.parse_args(argv).quick)
    local, mesh = report["local_tasks_per_s"], report["mesh_tasks_per_s"]
    print(f"\nno-op tasks submitted on A, {report['tasks']} per run, {report['repetitions']} runs, "
          f"{report['workers']} workers (min/median/max tasks/s):")
    print(f"  run by A's own workers        {local['min']:7.0f} {local['median']:7.0f} {local['max']:7.0f}")
    apart = report["mesh_apart_tasks_per_s"]
    print(f"  run by B, B in A's process    {mesh['min']:7.0f} {mesh['median']:7.0f} {mesh['max']:7.0f}")
    print(f"  run by B, B its own process   {apart['min']:7.0f} {apart['median']:7.0f} {apart['max']:7.0f}")
    for r in (report["ratio"], report["ratio_apart"]):
        print(f"  {r['ratio']}: {r['measured']:.3f} (goal {r['goal']}: {'met' if r['met'] else 'NOT met'})")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
