"""Durable no-op tasks per second through the local queue and workers (real SQLite file).

    .venv/bin/python -m bench.taskqueue_local [--tasks N] [--concurrency C] [--synchronous full|normal]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from triomcp.settings import TaskQueueSettings
from triomcp.taskqueue import HandlerRegistry, TaskContext, open_task_queue, run_workers
from triomcp.taskqueue.model import Task


async def measure(tasks: int, concurrency: int, synchronous: str, submitters: int = 8) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = TaskQueueSettings(synchronous=synchronous)  # type: ignore[arg-type]
        queue = await open_task_queue(Path(tmp) / "bench.db", settings)
        registry = HandlerRegistry()

        async def noop(task: Task, ctx: TaskContext) -> Any:
            return None

        registry.register("noop", noop)
        done = trio.Event()
        finished = 0
        try:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                async def submitter(n: int) -> None:
                    for _ in range(n):
                        await queue.submit("noop", {})

                async def watch() -> None:
                    nonlocal finished
                    while True:
                        if queue.statistics().by_state.get("succeeded", 0) >= tasks:
                            done.set()
                            return
                        await trio.sleep(0.01)

                await nursery.start(lambda task_status: run_workers(
                    queue, registry, holder="bench", concurrency={"*": concurrency}, lease_seconds=30.0,
                    task_status=task_status))
                for i in range(submitters):
                    nursery.start_soon(submitter, tasks // submitters + (1 if i < tasks % submitters else 0))
                nursery.start_soon(watch)
                await done.wait()
                elapsed = time.perf_counter() - start
                nursery.cancel_scope.cancel()
        finally:
            await queue.aclose()
    return {"tasks": tasks, "seconds": elapsed, "tasks_per_s": tasks / elapsed, "synchronous": synchronous,
            "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--synchronous", default="full")
    args = parser.parse_args()
    result = trio.run(measure, args.tasks, args.concurrency, args.synchronous)
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} "
          f"{result['tasks']} durable tasks (synchronous={result['synchronous']}) in {result['seconds']:.2f}s: "
          f"{result['tasks_per_s']:.0f} tasks/s")


if __name__ == "__main__":
    main()
