"""How the queue reaches its store: one database thread, group commit, and a pipeline.

- Blocking SQLite calls run in a worker thread on the store's one connection, one job at a time.
  ``thread=False`` runs them on the event loop itself, blocking it: for tests under
  ``trio.testing.MockClock`` (``autojump_clock``), whose virtual clock jumps to the next deadline
  whenever every task waits, a task waiting for the database thread included (so a lease could run
  out while SQLite writes).
- Group commit: every operation issued while a job is in the thread waits for the next job, and
  that job runs all of them: the changes in one transaction (one fsync; ``Store.batch``: each in its
  own savepoint, so one refused change alters nothing while the others commit), then the reads.
  Each caller gets its own result or exception, and nothing is acknowledged before it is durable.
- The pipeline: the job is handed to the thread with ``trio.lowlevel.start_thread_soon`` and its
  results come back through ``run_sync_soon``; that callback sends the next job (everything that
  queued up meanwhile) to the thread *before* any caller runs on with its result, so the disk works
  on one commit while the event loop handles the one before. No task owns the pump: every job has
  callers waiting for it.
- Cancellation: an operation not yet sent to the thread is withdrawn (nothing was done); one in the
  thread is seen through, shielded, so the queue's counters and wake-ups always follow the store;
  the cancellation then reaches the caller at its next checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import outcome
import trio

from triomcp.taskqueue.store import Store

__all__ = ["Database", "DatabaseStatistics"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    jobs: int
    """Trips to the database thread."""
    commits: int
    """Transactions committed (one fsync each with ``synchronous=FULL``)."""
    changes: int
    """Changes in them (a group commit holds several)."""
    reads: int


class _Op:
    __slots__ = ("fn", "ok", "value", "write")

    def __init__(self, fn: Callable[[], Any], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.ok = False
        self.value: Any = None


class _Job:
    """The operations of one trip to the thread."""

    __slots__ = ("done", "ops", "sent")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.sent = trio.Event()
        self.done = trio.Event()


def run_job(store: Store, ops: list[_Op]) -> None:
    """In the database thread: the changes in one transaction, then the reads; each op gets its outcome."""
    writes = [op for op in ops if op.write]
    if writes:
        for op, (ok, value) in zip(writes, store.batch([op.fn for op in writes]), strict=True):
            op.ok, op.value = ok, value
    for op in ops:
        if not op.write:
            try:
                op.ok, op.value = True, op.fn()
            except Exception as exc:
                op.ok, op.value = False, exc


class Database:
    def __init__(self, store: Store, *, thread: bool = True) -> None:
        self.store = store
        self._thread = thread
        self._queued = _Job()
        self._busy = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._jobs = self._commits = self._changes = self._reads = 0

    def statistics(self) -> DatabaseStatistics:
        return DatabaseStatistics(jobs=self._jobs, commits=self._commits, changes=self._changes,
                                  reads=self._reads)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read (or a one-off, such as closing), outside any transaction."""
        return await self._run(_Op(partial(fn, *args, **kwargs), write=False))  # type: ignore[no-any-return]

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A change, committed with whatever other changes are waiting; its result, or its exception."""
        return await self._run(_Op(partial(fn, *args, **kwargs), write=True))  # type: ignore[no-any-return]

    async def _run(self, op: _Op) -> Any:
        if not self._thread:
            await trio.lowlevel.checkpoint()
            self._count([op])
            run_job(self.store, [op])
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            job = self._queued
            job.ops.append(op)
            if not self._busy:
                self._send()
            if not job.sent.is_set():
                try:
                    await job.sent.wait()
                except trio.Cancelled:
                    job.ops.remove(op)  # not sent yet: withdrawn, nothing was done
                    raise
            with trio.CancelScope(shield=True):  # in the thread: seen through
                await job.done.wait()
        if op.ok:
            return op.value
        raise op.value

    def _count(self, ops: list[_Op]) -> None:
        changes = sum(op.write for op in ops)
        self._jobs += 1
        self._commits += changes > 0
        self._changes += changes
        self._reads += len(ops) - changes

    def _send(self) -> None:
        """Hand every queued operation to the thread as one job (called on the event loop)."""
        job, self._queued = self._queued, _Job()
        self._busy = True
        self._count(job.ops)
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        job.sent.set()
        trio.lowlevel.start_thread_soon(partial(run_job, self.store, job.ops), partial(self._deliver, job))

    def _deliver(self, job: _Job, result: outcome.Outcome[None]) -> None:
        """In the thread, once the job ran: back to the event loop."""
        assert self._token is not None
        self._token.run_sync_soon(self._finished, job, result)

    def _finished(self, job: _Job, result: outcome.Outcome[None]) -> None:
        """On the event loop: the next job goes to the thread first, then this job's callers wake."""
        self._busy = False
        if isinstance(result, outcome.Error):  # run_job catches Exception: only a BaseException lands here
            for op in job.ops:
                op.ok, op.value = False, result.error
        if self._queued.ops:
            self._send()
        job.done.set()
