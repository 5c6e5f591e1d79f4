"""Durable no-op tasks per second through the local queue and workers (real SQLite file), beside the
same queue without fsync and a floor: what the disk and SQLite allow with nothing of ours in the way.

    .venv/bin/python -m bench.taskqueue_local [--tasks N] [--rounds R] [--concurrency C] [--submitters S]

Each round runs, in an order rotated per round, on a fresh database file each:

- ``queue FULL``: the real ``TaskQueue`` and ``run_workers``, ``synchronous=FULL`` (an fsync per commit);
- ``queue OFF``: the same, ``synchronous=OFF``: what our code costs without the disk;
- ``floor FULL`` / ``floor OFF``: one thread, no event loop, no objects, running the statements a task
  needs (submit: next seq + INSERT; claim: SELECT + UPDATE; complete: SELECT + UPDATE) on the same
  schema, committing as often per task as the ``queue FULL`` run of the same round did.

Reported: tasks/s (min/median/max over rounds), commits per task and changes per commit of the
queue, ratios beside the goal (>= 2000 tasks/s), and which limit is nearer: the fsync or our code.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.stats import rotated, summary
from triomcp.settings import TaskQueueSettings
from triomcp.taskqueue import HandlerRegistry, Task, TaskContext, TaskQueue, run_workers, schema
from triomcp.taskqueue.store import Store

GOAL = 2000.0


async def measure(tasks: int, concurrency: int, synchronous: str, submitters: int = 16) -> dict[str, Any]:
    """Submit ``tasks`` no-op tasks from ``submitters`` tasks while ``concurrency`` workers run them."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = TaskQueueSettings()
        store = await trio.to_thread.run_sync(lambda: Store(Path(tmp) / "bench.db", synchronous=synchronous.upper()))
        queue = TaskQueue(store, settings)
        registry = HandlerRegistry()

        async def noop(task: Task, ctx: TaskContext) -> Any:
            return None

        registry.register("noop", noop)
        done = trio.Event()
        succeeded = 0

        def count(task: Task) -> None:  # a listener: told of every change, so no polling
            nonlocal succeeded
            if task.state.value == "succeeded":
                succeeded += 1
                if succeeded >= tasks:
                    done.set()

        queue.listeners.append(count)
        try:
            cpu = time.process_time()
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                async def submitter(n: int) -> None:
                    for _ in range(n):
                        await queue.submit("noop", {})

                await nursery.start(lambda task_status: run_workers(
                    queue, registry, holder="bench", concurrency={"*": concurrency}, lease_seconds=30.0,
                    task_status=task_status))
                for i in range(submitters):
                    nursery.start_soon(submitter, tasks // submitters + (1 if i < tasks % submitters else 0))
                await done.wait()
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu
                nursery.cancel_scope.cancel()
            stats = queue.statistics()
        finally:
            await queue.aclose()
    return {"tasks": tasks, "seconds": elapsed, "tasks_per_s": tasks / elapsed, "synchronous": synchronous,
            "concurrency": concurrency, "submitters": submitters, "cpu_ms_per_task": 1000 * cpu / tasks,
            "jobs_per_task": stats.database_jobs / tasks, "commits_per_task": stats.commits / tasks,
            "changes_per_commit": stats.committed_changes / max(1, stats.commits)}


def floor(tasks: int, synchronous: str, tasks_per_commit: float) -> dict[str, Any]:
    """The statements of ``tasks`` tasks from one thread, ``tasks_per_commit`` tasks' changes per commit."""
    per = max(1, round(tasks_per_commit))
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(str(Path(tmp) / "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        schema.migrate(db, Path(tmp))
        insert = schema.INSERT
        claim = f"{schema.SELECT} WHERE state = 'queued' AND type IN (?) AND not_before <= ? ORDER BY priority DESC, seq LIMIT ?"
        get = f"{schema.SELECT} WHERE id = ?"
        update = schema.UPDATE
        now = time.time()
        start = time.perf_counter()
        leased: list[str] = []
        made = 0
        while made < tasks or leased:
            db.execute("BEGIN IMMEDIATE")
            for row_id in leased:  # complete what the last transaction claimed
                row = db.execute(get, (row_id,)).fetchone()
                db.execute(update, ("succeeded", row[8], 0.0, None, None, None, 0, 1.0, None, "null", None,
                                    now, now, row[22] + 1, None, row_id))
            n = min(per, tasks - made)
            for _ in range(n):
                seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM tasks").fetchone()[0]
                db.execute(insert, (f"t{seq}", seq, "noop", "{}", 0, "queued", None, None, 0, 3, 0.0, None, None,
                                    None, 0, None, None, None, None, now, now, None, 1, None, None))
            made += n
            leased = []
            for row in db.execute(claim, ("noop", now, n)).fetchall():
                db.execute(update, ("leased", row[8] + 1, 0.0, "bench", "token", now + 30, 0, None, None, None,
                                    None, now, None, row[22] + 1, None, row[0]))
                leased.append(row[0])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
    return {"tasks": tasks, "seconds": elapsed, "tasks_per_s": tasks / elapsed, "tasks_per_commit": per}


def fsyncs_per_second(count: int = 200) -> float:
    """The disk's own pace: 4 KiB appended and fsynced, ``count`` times."""
    with tempfile.NamedTemporaryFile() as f:
        start = time.perf_counter()
        for _ in range(count):
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        return count / (time.perf_counter() - start)


def compare(tasks: int, rounds: int, concurrency: int, submitters: int) -> dict[str, Any]:
    """Every design once per round, in a rotated order; the floors batch as that round's queue FULL did."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("queue FULL", "queue OFF", "floor FULL", "floor OFF")}
    disk: list[float] = []
    for rep in range(rounds):
        for name, sync in rotated([("queue FULL", "full"), ("queue OFF", "off")], rep):
            runs[name].append(trio.run(measure, tasks, concurrency, sync, submitters))
        tasks_per_commit = 1 / runs["queue FULL"][-1]["commits_per_task"]
        for name, sync in rotated([("floor FULL", "full"), ("floor OFF", "off")], rep):
            runs[name].append(floor(tasks, sync, tasks_per_commit))
        disk.append(fsyncs_per_second())
    tps = {name: summary([r["tasks_per_s"] for r in rs]) for name, rs in runs.items()}
    return {"tasks": tasks, "rounds": rounds, "concurrency": concurrency, "submitters": submitters,
            "tasks_per_s": tps, "runs": runs, "fsyncs_per_s": summary(disk)}


def report(result: dict[str, Any]) -> None:
    tps, runs = result["tasks_per_s"], result["runs"]
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}; {result['tasks']} tasks per run, "
          f"{result['rounds']} rounds, {result['submitters']} submitters, {result['concurrency']} workers; "
          f"disk: {result['fsyncs_per_s']['median']:.0f} fsyncs/s (median)")
    print(f"{'design':12} {'tasks/s min':>11} {'median':>7} {'max':>6} {'commits/task':>13} {'changes/commit':>15}"
          f" {'CPU ms/task':>12}")
    for name, rs in runs.items():
        extra = ""
        if name.startswith("queue"):
            extra = (f" {statistics.median(r['commits_per_task'] for r in rs):13.3f}"
                     f" {statistics.median(r['changes_per_commit'] for r in rs):15.1f}"
                     f" {statistics.median(r['cpu_ms_per_task'] for r in rs):12.3f}")
        else:
            extra = f" {1 / statistics.median(r['tasks_per_commit'] for r in rs):13.3f}"
        print(f"{name:12} {tps[name]['min']:11.0f} {tps[name]['median']:7.0f} {tps[name]['max']:6.0f}{extra}")
    med = {name: s["median"] for name, s in tps.items()}
    rows = [("queue FULL / goal (2000 tasks/s)", med["queue FULL"] / GOAL, ">= 1"),
            ("queue FULL / queue OFF (what the fsync leaves)", med["queue FULL"] / med["queue OFF"], ""),
            ("queue FULL / floor FULL (what our code leaves)", med["queue FULL"] / med["floor FULL"], ""),
            ("queue OFF / floor OFF", med["queue OFF"] / med["floor OFF"], ""),
            ("floor FULL / goal", med["floor FULL"] / GOAL, "")]
    print()
    for label, value, goal in rows:
        print(f"{label:48} {value:6.2f} {goal}")
    fsync_gain, code_gain = med["queue OFF"] / med["queue FULL"], med["floor FULL"] / med["queue FULL"]
    limit = "the fsync" if fsync_gain > code_gain else "our code"
    print(f"the limit: {limit} (without the fsync the queue would go {fsync_gain:.2f}x faster; "
          f"with the fsync but without our code, {code_gain:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--submitters", type=int, default=16)
    args = parser.parse_args()
    report(compare(args.tasks, args.rounds, args.concurrency, args.submitters))


if __name__ == "__main__":
    main()
