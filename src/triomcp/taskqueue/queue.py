"""``TaskQueue``: the async face of the durable queue.

Blocking SQLite calls run in one database thread and changes are group-committed
(:mod:`triomcp.taskqueue.database`). Waiting is event-driven: submits, retries
coming due, lease recoveries and cancellations wake the waiters; a future retry
is woken by a timer at its instant, never by polling. Time is the queue's clock
(:mod:`triomcp.taskqueue.clock`): epoch seconds in the database, Trio deadlines
for every wait.

Size: a little over 300 lines: one async method per queue operation (submit, read, claim,
renew, report, the outcomes, input, cancel, the waits, what the mesh announces) and the
maintenance loop, each a few lines over the store and the state machine.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from triomcp._retry import Backoff, retry_transient
from triomcp.errors import StoreUnavailable
from triomcp.settings import TaskQueueSettings
from triomcp.taskqueue import machine
from triomcp.taskqueue.clock import QueueClock
from triomcp.taskqueue.database import Database
from triomcp.taskqueue.model import Lease, QueueStatistics, Task, TaskState
from triomcp.taskqueue.signals import Signal, TaskWakeups
from triomcp.taskqueue.store import Store

__all__ = ["TaskQueue", "open_task_queue"]

T = TypeVar("T")
log = logging.getLogger("triomcp.taskqueue")
PRUNE_EVERY_SECONDS = 60.0


class TaskQueue:
    name = "local"

    def __init__(self, store: Store, settings: TaskQueueSettings, *, clock: QueueClock | None = None,
                 database_thread: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or QueueClock.current()
        self.backoff = Backoff()
        self._db = Database(store, thread=database_thread)
        self._work = Signal()
        """Fired when something may have become claimable."""
        self._leases = Signal()
        """Fired when the set of leases changed (the maintenance task re-plans its sleep)."""
        self._backlog = Signal()
        """Fired when the queued tasks or the idle workers waiting here changed (what to announce)."""
        self._idle: Counter[str] = Counter()
        """Workers waiting in :meth:`wait_claim`, by task type (``*``: any type)."""
        self._wakeups = TaskWakeups()
        self._by_state: Counter[str] = Counter()
        self._submitted = self._expiries = self._retries = self._dead = 0
        self._closed = False
        self.listeners: list[Callable[[Task], None]] = []
        """Called with every changed task (the server turns them into resource updates)."""

    # -- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read (or a one-off), in the database thread."""
        return await self._db.read(fn, *args, **kwargs)

    def _changed(self, before: TaskState | None, after: Task, *, notify: bool = True) -> None:
        """Counters, wake-ups and listeners for a task now ``after`` (``before``: its state until now,
        None for a new task). ``notify=False`` leaves the listeners out."""
        if before is not None:
            self._by_state[before.value] -= 1
        self._by_state[after.state.value] += 1
        if after.state is TaskState.QUEUED:
            self._work.fire()
        if after.state is TaskState.QUEUED or before is TaskState.QUEUED:
            self._backlog.fire()
        if before is None or before is TaskState.LEASED or after.state is TaskState.LEASED:
            self._leases.fire()
        if after.state is TaskState.DEAD and before is not TaskState.DEAD:
            self._dead += 1
        self._wakeups.changed(after)
        if notify:
            for listener in self.listeners:
                listener(after)

    async def _change(self, task_id: str, apply: Callable[[Task], Task]) -> Task:
        box: list[Task] = []

        def step(task: Task) -> Task:
            box.append(task)
            return apply(task)

        after = await self._db.write(self.store.change, task_id, step)
        self._changed(box[0].state, after)
        return after

    async def _transition(self, task_id: str, event: str, **data: Any) -> Task:
        """Apply ``event`` (:func:`triomcp.taskqueue.machine.transition`) to the stored task, now."""
        return await self._change(task_id, lambda t: machine.transition(t, event, now=self.clock.now(),
                                                                        **data))

    async def _load_counts(self) -> None:
        self._by_state = Counter(await self._run(self.store.count_by_state))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._run(self.store.close)

    # -- submitting and reading -----------------------------------------------------------------
    async def submit(self, task_type: str, payload: Any, *, priority: int = 0,
                     idempotency_key: str | None = None, max_attempts: int | None = None,
                     submitter: str | None = None, ttl_seconds: float | None = None) -> Task:
        """Store a task durably and return it (the same task again for a repeated idempotency key).

        ``ttl_seconds``: once finished and this long after its creation, the task may be pruned."""
        if not task_type or len(task_type) > 128:
            raise ValueError("task_type must be 1 to 128 characters")
        now = self.clock.now()
        task, created = await self._db.write(
            self.store.submit, task_type, payload, priority=priority, idempotency_key=idempotency_key,
            max_attempts=self.settings.max_attempts if max_attempts is None else max_attempts,
            submitter=submitter, now=now, expires_at=None if ttl_seconds is None else now + ttl_seconds,
        )
        if created:
            self._submitted += 1
            self._changed(None, task)
        return task

    async def get(self, task_id: str) -> Task:
        return await self._run(self.store.get, task_id)

    async def list_tasks(self, *, state: str | None = None, task_type: str | None = None,
                         submitter: str | None = None, cursor: str | None = None,
                         limit: int = 50) -> tuple[list[Task], str | None]:
        """Newest first, at most ``limit`` (1 to 500) and the cursor of the next page (raises ValueError
        for a cursor it did not issue)."""
        return await self._run(self.store.list_tasks, state=state, task_type=task_type, submitter=submitter,
                               cursor=cursor, limit=max(1, min(limit, 500)))

    def statistics(self) -> QueueStatistics:
        by_state = {state: count for state, count in self._by_state.items() if count}
        db = self._db.statistics()
        return QueueStatistics(by_state=by_state, submitted=self._submitted, lease_expiries=self._expiries,
                               retries=self._retries, dead_letters=self._dead, database_jobs=db.jobs,
                               commits=db.commits, committed_changes=db.changes)

    # -- workers' side -------------------------------------------------------------------------
    async def claim(self, holder: str, task_types: Sequence[str] | None, *,
                    lease_seconds: float | None = None) -> Lease | None:
        """Claim the best task claimable now, or None at once if there is none (see :meth:`wait_claim`)."""
        return (await self._claim(holder, task_types, lease_seconds))[0]

    async def _claim(self, holder: str, task_types: Sequence[str] | None,
                     lease_seconds: float | None) -> tuple[Lease | None, float | None]:
        seconds = lease_seconds or self.settings.lease_seconds
        types = list(task_types) if task_types is not None else None
        task, retry_at = await self._db.write(self.store.claim, holder, types, lease_seconds=seconds,
                                              now=self.clock.now())
        if task is None:
            return None, retry_at
        # Listeners are not told: what they show is the same for a queued and a leased task ("working").
        self._changed(TaskState.QUEUED, task, notify=False)
        assert task.lease_token is not None and task.lease_expires_at is not None
        return Lease(task, task.lease_token, task.lease_expires_at), None

    async def claim_many(self, holder: str, task_types: Sequence[str] | None, count: int, *,
                         lease_seconds: float | None = None) -> tuple[list[Lease], int]:
        """Claim up to ``count`` tasks claimable now (each its own lease) in one transaction; returns
        them and how many claimable now are left."""
        seconds = lease_seconds or self.settings.lease_seconds
        types = list(task_types) if task_types is not None else None
        tasks, _, remaining = await self._db.write(self.store.claim_many, holder, types, count=count,
                                                   lease_seconds=seconds, now=self.clock.now(),
                                                   count_remaining=True)
        leases = []
        for task in tasks:
            self._changed(TaskState.QUEUED, task, notify=False)
            assert task.lease_token is not None and task.lease_expires_at is not None
            leases.append(Lease(task, task.lease_token, task.lease_expires_at))
        return leases, remaining or 0

    async def wait_claim(self, holder: str, task_types: Sequence[str] | None, *,
                         lease_seconds: float | None = None) -> Lease:
        """Claim, waiting (without polling) until a task is there. While it waits, the worker counts
        as idle for these types (:meth:`idle_workers`)."""
        idle = list(task_types) if task_types is not None else ["*"]
        self._idle.update(idle)
        self._backlog.fire()
        try:
            while True:
                woken = self._work.arm()
                lease, retry_at = await self._claim(holder, task_types, lease_seconds)
                if lease is not None:
                    return lease
                with trio.move_on_at(math.inf if retry_at is None else self.clock.deadline(retry_at) + 0.001):
                    await woken.wait()
        finally:
            self._idle.subtract(idle)
            self._backlog.fire()

    def idle_workers(self) -> dict[str, int]:
        """Workers waiting for work here now, by task type (``*``: waiting for any type)."""
        return {t: n for t, n in self._idle.items() if n > 0}

    async def claimable(self) -> tuple[dict[str, int], float | None]:
        """Tasks claimable now, by type, and the Trio deadline at which a queued task that is not yet
        due comes due (None if there is none)."""
        counts, later = await self._run(self.store.claimable, now=self.clock.now())
        return counts, None if later is None else self.clock.deadline(later) + 0.001

    def backlog_changed(self) -> trio.Event:
        """An event set at the next change of the queued tasks or of the idle workers."""
        return self._backlog.arm()

    async def renew(self, task_id: str, token: str, *, lease_seconds: float | None = None) -> Lease:
        """Extend the lease; the returned task says whether a cancel was requested."""
        seconds = lease_seconds or self.settings.lease_seconds
        task = await self._transition(task_id, "renew", token=token, lease_seconds=seconds)
        assert task.lease_expires_at is not None
        return Lease(task, token, task.lease_expires_at)

    async def report_progress(self, task_id: str, token: str, fraction: float,
                              message: str | None = None) -> Task:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        return await self._transition(task_id, "progress", token=token, fraction=fraction, message=message)

    async def complete(self, task_id: str, token: str, result: Any) -> Task:
        return await self._transition(task_id, "complete", token=token, result=result)

    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Task:
        """Record a failed attempt: back to the queue after a backoff, or failed/dead for good."""
        task = await self._change(task_id, lambda t: machine.fail(
            t, now=self.clock.now(), token=token, error=error, retry=retry, backoff=self.backoff))
        if task.state is TaskState.QUEUED:
            self._retries += 1
        return task

    async def release(self, task_id: str, token: str) -> Task:
        """Give a lease back without spending the attempt (graceful shutdown)."""
        return await self._transition(task_id, "release", token=token)

    async def confirm_cancelled(self, task_id: str, token: str) -> Task:
        """The holder stopped the handler after a cancel request."""
        return await self._transition(task_id, "cancelled", token=token)

    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Task:
        """The handler needs input: park the task (WAITING) until ``provide_input`` answers every request."""
        return await self._transition(task_id, "suspend", token=token, requests=requests)

    async def provide_input(self, task_id: str, responses: dict[str, Any]) -> Task:
        """Answers for a WAITING task; queued again once every open request is answered. Answers to
        keys that are not open (never asked, already answered) are ignored, as is a task not waiting."""
        def apply(task: Task) -> Task:
            if task.state is not TaskState.WAITING:
                return task
            return machine.transition(task, "provide", now=self.clock.now(), responses=responses)

        return await self._change(task_id, apply)

    # -- cancelling and watching --------------------------------------------------------------------
    async def cancel(self, task_id: str) -> Task:
        """Queued: cancelled at once. Leased: the holder is asked to stop (see wait_cancel_requested)."""
        return await self._transition(task_id, "cancel")

    async def wait_changed(self, task_id: str, after_version: int) -> Task:
        """The task once its version is past ``after_version``."""
        while True:
            woken = self._wakeups.changes(task_id).arm()
            task = await self.get(task_id)
            if task.version > after_version:
                return task
            await woken.wait()

    async def wait_finished(self, task_id: str) -> Task:
        task = await self.get(task_id)
        while not task.finished:
            task = await self.wait_changed(task_id, task.version)
        return task

    async def wait_cancel_requested(self, task_id: str) -> None:
        """Return once a cancel is requested for this leased task (for the worker running it)."""
        await self._wakeups.cancel_requested(task_id).wait()

    def forget(self, task_id: str) -> None:
        """Drop the wake-up signal of a task nobody watches any more."""
        self._wakeups.forget(task_id)

    # -- maintenance ---------------------------------------------------------------------------------
    async def run_maintenance(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover expired leases exactly when they expire; prune finished tasks past retention.

        While the database is unavailable (disk full, locked), nothing changes and the pass is tried again."""
        await self._load_counts()
        task_status.started()
        next_prune = trio.current_time()

        async def one_pass() -> float:
            """Expire and prune; the Trio deadline of the next pass."""
            nonlocal next_prune
            now = self.clock.now()
            expired = await self._db.write(self.store.expire_leases, now=now, backoff=self.backoff)
            for task in expired:
                self._expiries += 1
                self._changed(TaskState.LEASED, task)
            if trio.current_time() >= next_prune:
                now = self.clock.now()
                retention = self.settings.retention_seconds
                if await self._db.write(self.store.prune, now=now, finished_before=now - retention):
                    await self._load_counts()
                next_prune = trio.current_time() + PRUNE_EVERY_SECONDS
            lease_at, _ = await self._run(self.store.next_deadlines)
            return next_prune if lease_at is None else min(next_prune, self.clock.deadline(lease_at) + 0.001)

        while True:
            woken = self._leases.arm()
            deadline = await retry_transient(one_pass, transient=(StoreUnavailable,),
                                             what="lease expiry and pruning", log=log)
            with trio.move_on_at(deadline):
                await woken.wait()


async def open_task_queue(path: Path, settings: TaskQueueSettings, *,
                          database_thread: bool = True, owner_tag: str = "") -> TaskQueue:
    """Open (creating or migrating) the queue database at ``path``.

    ``database_thread=False`` runs every SQLite call on the event loop itself, blocking it: for tests
    under ``autojump_clock`` only (see :mod:`triomcp.taskqueue.database`). ``owner_tag`` goes in front
    of every new task id (:mod:`triomcp._owner`)."""
    def open_store() -> Store:
        return Store(path, synchronous=settings.synchronous.upper(), owner_tag=owner_tag)

    store = await trio.to_thread.run_sync(open_store) if database_thread else open_store()
    queue = TaskQueue(store, settings, database_thread=database_thread)
    await queue._load_counts()
    return queue
