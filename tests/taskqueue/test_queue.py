"""The async queue and its workers on real SQLite files (Trio tests, bounded waits, no sleeps to sync).

Tests about time (leases, renewals, expiries, backoffs, outcome retries) run under ``autojump_clock``
on a queue opened with ``database_thread=False``: Trio's virtual clock jumps to the next deadline as
soon as every task waits, and a task waiting for the database thread counts as waiting, so with the
thread a lease could run out (and a ``fail_after`` fire) while SQLite is still writing.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from triomcp._retry import Backoff
from triomcp.errors import LeaseLost, PeerError
from triomcp.settings import TaskQueueSettings
from triomcp.taskqueue import (
    HandlerRegistry,
    NeedsInput,
    NonRetryable,
    TaskContext,
    TaskQueue,
    TaskState,
    open_task_queue,
)
from triomcp.taskqueue.model import Task
from triomcp.taskqueue.workers import run_workers


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    q = await open_task_queue(tmp_path / "queue.db", TaskQueueSettings(lease_seconds=2.0))
    try:
        yield q
    finally:
        await q.aclose()


@pytest.fixture
async def virtual(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    """A queue in virtual time, for a test that asks for ``autojump_clock`` itself (pytest-trio runs a test
    on a clock among the test's own arguments, not its fixtures')."""
    assert isinstance(trio.lowlevel.current_clock(), MockClock), "ask for autojump_clock"
    settings = TaskQueueSettings(lease_seconds=30.0)
    q = await open_task_queue(tmp_path / "virtual.db", settings, database_thread=False)
    try:
        yield q
    finally:
        await q.aclose()


async def test_wait_claim_wakes_on_submit(queue: TaskQueue) -> None:
    got: list[Any] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def claimer() -> None:
                got.append(await queue.wait_claim("w", ["x"]))
            nursery.start_soon(claimer)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            task = await queue.submit("x", {"n": 1})
    assert got[0].task.id == task.id


async def test_wait_finished_and_statistics(queue: TaskQueue) -> None:
    task = await queue.submit("x", {"n": 1})
    assert queue.statistics().by_state == {"queued": 1}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            done: list[Task] = []

            async def waiter() -> None:
                done.append(await queue.wait_finished(task.id))
            nursery.start_soon(waiter)
            lease = await queue.wait_claim("w", ["x"])
            await queue.report_progress(task.id, lease.token, 0.5, "half")
            await queue.complete(task.id, lease.token, {"ok": 1})
    assert done[0].state is TaskState.SUCCEEDED and done[0].result == {"ok": 1}
    assert queue.statistics().by_state == {"succeeded": 1}


async def test_stale_holder_cannot_record_an_outcome(virtual: TaskQueue, autojump_clock: MockClock) -> None:
    queue = virtual
    queue.backoff.cap = 0.0  # an expired lease is claimable again at once
    task = await queue.submit("x", {})
    first = await queue.claim("w1", ["x"], lease_seconds=30)
    assert first is not None
    claimed_at = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run_maintenance)
            second = await queue.wait_claim("w2", ["x"])  # the first lease expires, w2 gets the task
            nursery.cancel_scope.cancel()
    assert 30 <= trio.current_time() - claimed_at < 30.1  # recovered when the lease ran out, not later
    assert second.task.attempts == 2
    with pytest.raises(LeaseLost):
        await queue.complete(task.id, first.token, "stale")
    await queue.complete(task.id, second.token, "fresh")
    final = await queue.get(task.id)
    assert final.result == "fresh" and final.state is TaskState.SUCCEEDED


def registry_with(handlers: dict[str, Any]) -> HandlerRegistry:
    registry = HandlerRegistry()
    for name, fn in handlers.items():
        registry.register(name, fn)
    return registry


async def test_workers_run_handlers_and_record_failures(queue: TaskQueue) -> None:
    async def ok(task: Task, ctx: TaskContext) -> Any:
        await ctx.report_progress(0.5)
        return {"double": task.payload["n"] * 2}

    async def bad(task: Task, ctx: TaskContext) -> Any:
        raise NonRetryable("no way")

    registry = registry_with({"ok": ok, "bad": bad})
    a = await queue.submit("ok", {"n": 21})
    b = await queue.submit("bad", {})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_workers(
                queue, registry, holder="w", concurrency={"*": 2}, lease_seconds=2.0, task_status=task_status))
            done_a = await queue.wait_finished(a.id)
            done_b = await queue.wait_finished(b.id)
            nursery.cancel_scope.cancel()
    assert done_a.result == {"double": 42} and done_a.state is TaskState.SUCCEEDED
    assert done_b.state is TaskState.FAILED and done_b.error["code"] == "non_retryable"  # type: ignore[index]


async def run_until_finished(source: Any, queue: TaskQueue, handlers: dict[str, Any], task_id: str, *,
                             lease_seconds: float = 2.0, within: float = 20) -> Task:
    """One worker per type on ``source`` (and the queue's maintenance) until ``task_id`` is finished;
    returns the finished task."""
    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run_maintenance)
            await nursery.start(lambda task_status: run_workers(
                source, registry_with(handlers), holder="w", concurrency={"*": 1}, lease_seconds=lease_seconds,
                task_status=task_status))
            done = await queue.wait_finished(task_id)
            nursery.cancel_scope.cancel()
    return done


class FixedDraw(random.Random):
    """A random source whose every draw is the top of the range (a backoff waits its whole ceiling)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class RefusesOutcomes:
    """Fault injection: a task source whose first ``refusals`` outcomes fail with ``PeerError(message)``."""

    def __init__(self, inner: TaskQueue, refusals: int, message: str) -> None:
        self.inner, self.name, self.refusals, self.message = inner, "refusing", refusals, message

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def complete(self, task_id: str, token: str, result: Any) -> Any:
        if self.refusals:
            self.refusals -= 1
            raise PeerError(self.message)
        return await self.inner.complete(task_id, token, result)


@pytest.mark.parametrize(("refusals", "message"), [
    (2, "too many requests in flight (limit 64)"),  # a busy peer's -32010
    (6, "No valid connections available for peer"),  # a restarting owner: about 2.5 s of retries
])
async def test_a_refused_outcome_is_retried_and_the_task_runs_once(virtual: TaskQueue, refusals: int, message: str,
                                                                  autojump_clock: MockClock) -> None:
    runs: list[str] = []

    async def ok(task: Task, ctx: TaskContext) -> Any:
        runs.append(task.id)
        return "done"

    source = RefusesOutcomes(virtual, refusals, message)
    task = await virtual.submit("ok", {})
    done = await run_until_finished(source, virtual, {"ok": ok}, task.id, lease_seconds=10.0)
    # The lease (10 s) outlasts the refusals: the outcome lands, and the task does not run again.
    assert source.refusals == 0 and runs == [task.id]
    assert done.state is TaskState.SUCCEEDED and done.result == "done" and done.attempts == 1


async def test_an_outcome_refused_past_the_lease_runs_the_task_again(virtual: TaskQueue,
                                                                     autojump_clock: MockClock) -> None:
    runs: list[float] = []

    async def ok(task: Task, ctx: TaskContext) -> Any:
        runs.append(trio.current_time())
        return "done"

    source = RefusesOutcomes(virtual, 20, "No valid connections available for peer")  # more than 10 s of them
    task = await virtual.submit("ok", {})
    done = await run_until_finished(source, virtual, {"ok": ok}, task.id, lease_seconds=10.0, within=600)
    # The worker gave up after its patience (10 s); the lease, no longer renewed, expired; the task ran again.
    assert len(runs) == 2 and runs[1] - runs[0] >= 10 and source.refusals == 0
    assert done.state is TaskState.SUCCEEDED and done.attempts == 2
    assert virtual.statistics().lease_expiries == 1


async def test_crashing_handler_retries_then_dead_letters(virtual: TaskQueue,
                                                          autojump_clock: MockClock) -> None:
    calls: list[tuple[int, float]] = []

    async def crash(task: Task, ctx: TaskContext) -> Any:
        calls.append((task.attempts, trio.current_time()))
        raise RuntimeError("boom")

    virtual.backoff = Backoff(base=10.0, cap=10.0, rng=FixedDraw())  # every retry waits the whole 10 s
    task = await virtual.submit("crash", {}, max_attempts=3)
    final = await run_until_finished(virtual, virtual, {"crash": crash}, task.id, within=600)
    assert [attempt for attempt, _ in calls] == [1, 2, 3] and final.state is TaskState.DEAD
    assert all(10 <= later - earlier < 10.1 for (_, earlier), (_, later) in itertools.pairwise(calls))
    assert final.error == {"code": "handler_error", "message": "RuntimeError: boom"}
    assert virtual.statistics().retries == 2 and virtual.statistics().dead_letters == 1


async def test_cancel_reaches_a_running_handler(queue: TaskQueue) -> None:
    started = trio.Event()
    stopped: list[bool] = []

    async def slow(task: Task, ctx: TaskContext) -> Any:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            stopped.append(True)

    task = await queue.submit("slow", {})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_workers(
                queue, registry_with({"slow": slow}), holder="w", concurrency={"*": 1}, lease_seconds=2.0,
                task_status=task_status))
            await started.wait()
            await queue.cancel(task.id)
            final = await queue.wait_finished(task.id)
            nursery.cancel_scope.cancel()
    assert stopped == [True] and final.state is TaskState.CANCELLED


async def test_a_task_queued_again_with_a_cancel_request_stops_when_claimed(virtual: TaskQueue,
                                                                           autojump_clock: MockClock) -> None:
    finished: list[bool] = []

    async def slow(task: Task, ctx: TaskContext) -> Any:
        await trio.sleep(1000)
        finished.append(True)

    task = await virtual.submit("slow", {})
    lease = await virtual.claim("gone", ["slow"])
    assert lease is not None
    await virtual.cancel(task.id)  # asked to stop while leased ...
    queued = await virtual.release(task.id, lease.token)  # ... and given back before its holder saw it
    assert queued.state is TaskState.QUEUED and queued.cancel_requested
    started = trio.current_time()
    final = await run_until_finished(virtual, virtual, {"slow": slow}, task.id, lease_seconds=30, within=600)
    # The next holder is told at its claim, not at its first renewal (10 s later).
    assert final.state is TaskState.CANCELLED and finished == [] and trio.current_time() - started < 1


async def test_lease_renewal_keeps_a_long_handler_alive(virtual: TaskQueue,
                                                        autojump_clock: MockClock) -> None:
    async def long(task: Task, ctx: TaskContext) -> Any:
        await trio.sleep(100)  # more than three times the lease
        return "done"

    task = await virtual.submit("long", {})
    final = await run_until_finished(virtual, virtual, {"long": long}, task.id, lease_seconds=30, within=600)
    assert final.state is TaskState.SUCCEEDED and final.attempts == 1
    assert virtual.statistics().lease_expiries == 0
    assert 100 <= final.finished_at - final.created_at < 100.1  # type: ignore[operator]


async def test_queue_time_is_epoch_seconds_that_advance_with_trio(virtual: TaskQueue,
                                                                  autojump_clock: MockClock) -> None:
    first = await virtual.submit("x", {})
    assert abs(first.created_at - time.time()) < 60  # stored as wall-clock (epoch) seconds
    await trio.sleep(3600)
    second = await virtual.submit("x", {}, ttl_seconds=60)
    assert 3600 <= second.created_at - first.created_at < 3600.1  # an hour of Trio time, none of it real
    assert second.expires_at == second.created_at + 60
    assert virtual.clock.deadline(second.created_at) == pytest.approx(trio.current_time(), abs=0.1)


async def test_a_retry_is_claimable_exactly_when_its_backoff_ends(virtual: TaskQueue,
                                                                  autojump_clock: MockClock) -> None:
    virtual.backoff = Backoff(base=5.0, cap=5.0, rng=FixedDraw())
    task = await virtual.submit("x", {})
    lease = await virtual.claim("w", ["x"])
    assert lease is not None
    failed = await virtual.fail(task.id, lease.token, {"code": "flaky"})
    assert failed.state is TaskState.QUEUED and failed.not_before == pytest.approx(failed.updated_at + 5)
    assert await virtual.claim("w", ["x"]) is None
    failed_at = trio.current_time()
    with trio.fail_after(60):
        again = await virtual.wait_claim("w", ["x"])  # woken by a timer at the retry's instant, no polling
    assert 5 <= trio.current_time() - failed_at < 5.1 and again.task.attempts == 2


async def test_shutdown_releases_running_leases(queue: TaskQueue) -> None:
    started = trio.Event()

    async def slow(task: Task, ctx: TaskContext) -> Any:
        started.set()
        await trio.sleep_forever()

    task = await queue.submit("slow", {})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_workers(
                queue, registry_with({"slow": slow}), holder="w", concurrency={"*": 1}, lease_seconds=2.0,
                task_status=task_status))
            await started.wait()
            nursery.cancel_scope.cancel()
    after = await queue.get(task.id)
    assert after.state is TaskState.QUEUED and after.attempts == 0 and after.lease_holder is None


async def test_submit_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    script = textwrap.dedent(f"""
        import sys, trio
        from pathlib import Path
        from triomcp.settings import TaskQueueSettings
        from triomcp.taskqueue import open_task_queue
        async def main():
            q = await open_task_queue(Path({str(db)!r}), TaskQueueSettings())
            for i in range(5):
                t = await q.submit("x", {{"n": i}})
                print(t.id, flush=True)
            await trio.sleep_forever()
        trio.run(main)
    """)
    proc = await trio.lowlevel.open_process([sys.executable, "-c", script], stdout=subprocess.PIPE)
    acknowledged: list[str] = []
    try:
        buffer = b""
        with trio.fail_after(30):
            while len(acknowledged) < 5:
                chunk = await proc.stdout.receive_some()  # type: ignore[union-attr]
                assert chunk, "the submitting process died"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acknowledged += [line.decode() for line in lines if line]
        os.kill(proc.pid, signal.SIGKILL)  # right after the acknowledgements, mid-flight
    finally:
        proc.kill()
        with trio.fail_after(10):
            await proc.wait()
        await proc.stdout.aclose()  # type: ignore[union-attr]
    queue = await open_task_queue(db, TaskQueueSettings())
    try:
        tasks, _ = await queue.list_tasks(limit=10)
        assert {t.id for t in tasks} == set(acknowledged)
    finally:
        await queue.aclose()


async def test_a_handler_that_needs_input_parks_the_task_until_it_is_answered(queue: TaskQueue) -> None:
    runs: list[dict[str, Any]] = []

    async def asks(task: Task, ctx: TaskContext) -> Any:
        runs.append(task.responses)
        if "name" not in task.responses:
            raise NeedsInput({"name": {"method": "elicitation/create"}, "other": {"method": "roots/list"}})
        return {"hello": task.responses["name"]}

    submitted = await queue.submit("asks", {})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_workers(
                queue, registry_with({"asks": asks}), holder="w", concurrency={"*": 1}, lease_seconds=2.0,
                task_status=task_status))
            task = await queue.get(submitted.id)
            while task.state is not TaskState.WAITING:
                task = await queue.wait_changed(submitted.id, task.version)
            assert set(task.pending_requests) == {"name", "other"} and task.attempts == 0
            assert queue.statistics().by_state.get("waiting") == 1
            task = await queue.provide_input(submitted.id, {"name": "Ada"})
            assert task.state is TaskState.WAITING and list(task.pending_requests) == ["other"]
            await queue.provide_input(submitted.id, {"other": {"roots": []}})
            done = await queue.wait_finished(submitted.id)
            nursery.cancel_scope.cancel()
    assert done.state is TaskState.SUCCEEDED and done.result == {"hello": "Ada"}
    assert runs == [{}, {"name": "Ada", "other": {"roots": []}}]
    # Durable: the answers are in the database, not only in memory.
    reread = await queue.get(submitted.id)
    assert reread.responses == {"name": "Ada", "other": {"roots": []}}


# -- what the mesh announces: batched claims, claimable counts, idle workers --------------------------
async def test_claim_many_leases_each_task_once_and_says_how_many_are_left(queue: TaskQueue) -> None:
    ids = [(await queue.submit("batch", {"i": i}, priority=i % 2)).id for i in range(5)]
    leases, remaining = await queue.claim_many("w", ["batch"], 3)
    assert len(leases) == 3 and remaining == 2
    assert len({lease.token for lease in leases}) == 3
    assert [lease.task.priority for lease in leases][:2] == [1, 1]  # the best first
    more, remaining = await queue.claim_many("w", ["batch"], 8)
    assert len(more) == 2 and remaining == 0
    assert sorted(lease.task.id for lease in leases + more) == sorted(ids)
    assert await queue.claim_many("w", ["batch"], 8) == ([], 0)
    for lease in leases + more:
        await queue.complete(lease.task.id, lease.token, None)
    assert queue.statistics().by_state == {"succeeded": 5}


async def test_claimable_counts_only_tasks_due_now_and_says_when_the_next_comes_due(queue: TaskQueue) -> None:
    await queue.submit("a", 1)
    await queue.submit("a", 2)
    task = await queue.submit("b", 3)
    lease = await queue.claim("w", ["b"])
    assert lease is not None
    await queue.fail(task.id, lease.token, {"code": "x", "message": "again"})  # queued again, after a backoff
    counts, due = await queue.claimable()
    assert counts == {"a": 2}
    assert due is not None and due > trio.current_time()


async def test_waiting_workers_count_as_idle_and_changes_fire_the_backlog_signal(queue: TaskQueue) -> None:
    assert queue.idle_workers() == {}
    changed = queue.backlog_changed()
    got: list[Any] = []

    async def worker() -> None:
        got.append(await queue.wait_claim("w", ["idle"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        with trio.fail_after(5):
            await changed.wait()  # fired as the worker starts to wait: it counts as idle from then on
        assert queue.idle_workers() == {"idle": 1}
        changed = queue.backlog_changed()
        await queue.submit("idle", None)
        with trio.fail_after(5):
            await changed.wait()
    assert len(got) == 1 and queue.idle_workers() == {}
