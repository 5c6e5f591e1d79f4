"""Durable no-op tasks per second submitted on node A and run by node B's mesh workers, beside
the same tasks run by A's own workers.

    .venv/bin/python -m bench.taskqueue_mesh [--tasks N]

Both nodes are full triomcp services (queue, libp2p node, workers) in one process and one Trio
loop, so they share one CPU core: the comparison is the same work on the same core, once through
local workers and once through MCP-over-libp2p claims (claim, complete: two round trips per
task, one long-poll per worker).
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

from triomcp.server.app import build_services
from triomcp.server.lifespan import running_services
from triomcp.settings import Settings
from triomcp.taskqueue import Task, TaskContext

WORKERS = 16


async def noop(task: Task, ctx: TaskContext) -> Any:
    return None


def _settings(data: Path, *, local_workers: int, mesh_workers: int) -> Settings:
    return Settings(  # type: ignore[arg-type]
        data_dir=data, log_level="WARNING",
        p2p={"listen": ["/ip4/127.0.0.1/tcp/0"]},
        taskqueue={"handlers": {"noop": "bench.taskqueue_mesh:noop"},
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
    return {"local": local, "mesh": mesh}


def run(quick: bool) -> dict[str, Any]:
    tasks, reps = (400, 2) if quick else (1500, 3)
    runs = [trio.run(measure, tasks) for _ in range(reps)]
    local = [r["local"] for r in runs]
    mesh = [r["mesh"] for r in runs]

    def summary(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    ratio = statistics.median(mesh) / statistics.median(local)
    return {"tasks": tasks, "repetitions": reps, "workers": WORKERS, "local_tasks_per_s": summary(local),
            "mesh_tasks_per_s": summary(mesh),
            "ratio": {"ratio": "mesh / local tasks/s", "measured": round(ratio, 3), "goal": ">= 0.5",
                      "met": ratio >= 0.5}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    report = run(parser.parse_args(argv).quick)
    local, mesh = report["local_tasks_per_s"], report["mesh_tasks_per_s"]
    print(f"\nno-op tasks submitted on A, {report['tasks']} per run, {report['repetitions']} runs, "
          f"{report['workers']} workers (min/median/max tasks/s):")
    print(f"  run by A's own workers        {local['min']:7.0f} {local['median']:7.0f} {local['max']:7.0f}")
    print(f"  run by B's mesh workers       {mesh['min']:7.0f} {mesh['median']:7.0f} {mesh['max']:7.0f}")
    r = report["ratio"]
    print(f"  {r['ratio']}: {r['measured']:.3f} (goal {r['goal']}: {'met' if r['met'] else 'NOT met'})")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
