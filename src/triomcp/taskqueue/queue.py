"""``TaskQueue``: the async face of the durable queue.

Blocking SQLite calls run in ``trio.to_thread`` on one dedicated connection
(a ``CapacityLimiter(1)`` serialises them). Waiting is event-driven: submits,
retries coming due, lease recoveries and cancellations wake the waiters; a
future retry is woken by a timer at its instant, never by polling.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from triomcp.errors import StoreUnavailable
from triomcp.settings import TaskQueueSettings
from triomcp.taskqueue import machine
from triomcp.taskqueue.model import Lease, QueueStatistics, Task, TaskState
from triomcp.taskqueue.store import Store, unavailable_delay

__all__ = ["TaskQueue", "open_task_queue"]

T = TypeVar("T")
log = logging.getLogger("triomcp.taskqueue")
PRUNE_EVERY_SECONDS = 60.0


class _Signal:
    """A re-armable broadcast: ``wait()`` returns after the next ``fire()``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    def arm(self) -> trio.Event:
        return self._event


class _Op:
    __slots__ = ("done", "fn", "ok", "value")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = False
        self.ok = False
        self.value: Any = None


class TaskQueue:
    name = "local"

    def __init__(self, store: Store, settings: TaskQueueSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.backoff = machine.Backoff()
        self._limiter = trio.CapacityLimiter(1)
        self._work = _Signal()
        """Fired when something may have become claimable."""
        self._leases = _Signal()
        """Fired when the set of leases changed (the maintenance task re-plans its sleep)."""
        self._task_signals: dict[str, _Signal] = {}
        self._cancel_events: dict[str, trio.Event] = {}
        """Leased tasks a local worker watches for a cancel request (no database read)."""
        self._by_state: Counter[str] = Counter()
        self._submitted = self._expiries = self._retries = self._dead = 0
        self._closed = False
        self.listeners: list[Callable[[Task], None]] = []
        """Called with every changed task (the server turns them into resource updates)."""
        self._pending: list[_Op] = []
        self._flushing = False
        self._flushed = _Signal()

    # -- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read (or a one-off), in the database thread."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A change, committed with whatever other changes are waiting (group commit).

        The first caller to find no commit in flight takes every waiting operation to the
        database thread and runs them in one transaction; the others wait for that commit.
        """
        op = _Op(lambda: fn(*args, **kwargs))
        self._pending.append(op)
        while not op.done:
            if self._flushing:
                await self._flushed.arm().wait()
                continue
            self._flushing = True
            batch, self._pending = self._pending, []
            try:
                # Shielded: the operations are in flight for every waiter, not just this one.
                with trio.CancelScope(shield=True):
                    results = await trio.to_thread.run_sync(
                        self.store.batch, [o.fn for o in batch], limiter=self._limiter)
            finally:
                self._flushing = False
            for o, (ok, value) in zip(batch, results, strict=True):
                o.done, o.ok, o.value = True, ok, value
            self._flushed.fire()
        if op.ok:
            return op.value  # type: ignore[no-any-return]
        raise op.value

    def _changed(self, before: Task | None, after: Task) -> None:
        if before is not None:
            self._by_state[before.state.value] -= 1
        self._by_state[after.state.value] += 1
        if after.state is TaskState.QUEUED:
            self._work.fire()
        if before is None or before.state is TaskState.LEASED or after.state is TaskState.LEASED:
            self._leases.fire()
        if after.state is TaskState.DEAD and (before is None or before.state is not TaskState.DEAD):
            self._dead += 1
        signal = self._task_signals.get(after.id)
        if signal is not None:
            signal.fire()
        if after.cancel_requested:
            self._cancel_event(after.id).set()
        if after.state is not TaskState.LEASED:
            self._cancel_events.pop(after.id, None)
        for listener in self.listeners:
            listener(after)

    def _cancel_event(self, task_id: str) -> trio.Event:
        event = self._cancel_events.get(task_id)
        if event is None:
            event = self._cancel_events[task_id] = trio.Event()
        return event

    def _signal(self, task_id: str) -> _Signal:
        signal = self._task_signals.get(task_id)
        if signal is None:
            signal = self._task_signals[task_id] = _Signal()
        return signal

    async def _change(self, task_id: str, apply: Callable[[Task], Task]) -> Task:
        box: list[Task] = []

        def step(task: Task) -> Task:
            box.append(task)
            return apply(task)

        after = await self._write(self.store.change, task_id, step)
        self._changed(box[0], after)
        return after

    async def _load_counts(self) -> None:
        by_state, _ = await self._run(self.store.counts)
        self._by_state = Counter(by_state)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._run(self.store.close)

    # -- submitting and reading -----------------------------------------------------------------
    async def submit(
        self,
        task_type: str,
        payload: Any,
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        submitter: str | None = None,
        ttl_seconds: float | None = None,
    ) -> Task:
        """Store a task durably and return it (the same task again for a repeated idempotency key).

        ``ttl_seconds``: once finished and this long after its creation, the task may be pruned."""
        if not task_type or len(task_type) > 128:
            raise ValueError("task_type must be 1 to 128 characters")
        now = self.clock()
        task, created = await self._write(
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

    async def list(
        self,
        *,
        state: str | None = None,
        task_type: str | None = None,
        submitter: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Task], str | None]:
        return await self._run(self.store.list, state=state, task_type=task_type, submitter=submitter,
                               cursor=cursor, limit=max(1, min(limit, 500)))

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            by_state={k: v for k, v in self._by_state.items() if v},
            submitted=self._submitted,
            lease_expiries=self._expiries,
            retries=self._retries,
            dead_letters=self._dead,
        )

    async def backlog_by_type(self) -> dict[str, int]:
        _, by_type = await self._run(self.store.counts)
        return by_type

    # -- workers' side -------------------------------------------------------------------------
    async def claim(self, holder: str, task_types: Sequence[str] | None, *, lease_seconds: float | None = None) -> Lease | None:
        return (await self._claim(holder, task_types, lease_seconds))[0]

    async def _claim(
        self, holder: str, task_types: Sequence[str] | None, lease_seconds: float | None
    ) -> tuple[Lease | None, float | None]:
        seconds = lease_seconds or self.settings.lease_seconds
        task, retry_at = await self._write(self.store.claim, holder, list(task_types) if task_types is not None
                                           else None, lease_seconds=seconds, now=self.clock())
        if task is None:
            return None, retry_at
        self._by_state["queued"] -= 1
        self._by_state["leased"] += 1
        self._leases.fire()
        signal = self._task_signals.get(task.id)
        if signal is not None:
            signal.fire()
        assert task.lease_token is not None and task.lease_expires_at is not None
        return Lease(task, task.lease_token, task.lease_expires_at), None

    async def wait_claim(self, holder: str, task_types: Sequence[str] | None, *,
                         lease_seconds: float | None = None) -> Lease:
        """Claim, waiting (without polling) until a task is there."""
        while True:
            woken = self._work.arm()
            lease, retry_at = await self._claim(holder, task_types, lease_seconds)
            if lease is not None:
                return lease
            deadline = math.inf
            if retry_at is not None:
                deadline = trio.current_time() + max(0.0, retry_at - self.clock()) + 0.001
            with trio.move_on_at(deadline):
                await woken.wait()

    async def renew(self, task_id: str, token: str, *, lease_seconds: float | None = None) -> Lease:
        """Extend the lease; the returned task says whether a cancel was requested."""
        seconds = lease_seconds or self.settings.lease_seconds
        task = await self._change(task_id, lambda t: machine.transition(
            t, "renew", now=self.clock(), token=token, lease_seconds=seconds))
        assert task.lease_expires_at is not None
        return Lease(task, token, task.lease_expires_at)

    async def report_progress(self, task_id: str, token: str, fraction: float, message: str | None = None) -> Task:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        return await self._change(task_id, lambda t: machine.transition(
            t, "progress", now=self.clock(), token=token, fraction=fraction, message=message))

    async def complete(self, task_id: str, token: str, result: Any) -> Task:
        return await self._change(task_id, lambda t: machine.transition(
            t, "complete", now=self.clock(), token=token, result=result))

    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Task:
        """Record a failed attempt: back to the queue after a backoff, or failed/dead for good."""
        def apply(task: Task) -> Task:
            now = self.clock()
            if not retry:
                return machine.transition(task, "fail_final", now=now, token=token, error=error)
            if machine.attempts_left(task):
                return machine.transition(task, "fail_retry", now=now, token=token, error=error,
                                          delay=self.backoff.delay(task.attempts))
            return machine.transition(task, "exhausted", now=now, token=token, error=error)

        task = await self._change(task_id, apply)
        if task.state is TaskState.QUEUED:
            self._retries += 1
        return task

    async def release(self, task_id: str, token: str) -> Task:
        """Give a lease back without spending the attempt (graceful shutdown)."""
        return await self._change(task_id, lambda t: machine.transition(t, "release", now=self.clock(), token=token))

    async def confirm_cancelled(self, task_id: str, token: str) -> Task:
        """The holder stopped the handler after a cancel request."""
        return await self._change(task_id, lambda t: machine.transition(t, "cancelled", now=self.clock(), token=token))

    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Task:
        """The handler needs input: park the task (WAITING) until ``provide_input`` answers every request."""
        return await self._change(task_id, lambda t: machine.transition(
            t, "suspend", now=self.clock(), token=token, requests=requests))

    async def provide_input(self, task_id: str, responses: dict[str, Any]) -> Task:
        """Answers for a WAITING task; queued again once every open request is answered. Answers to
        keys that are not open (never asked, already answered) are ignored, as is a task not waiting."""
        def apply(task: Task) -> Task:
            if task.state is not TaskState.WAITING:
                return task
            return machine.transition(task, "provide", now=self.clock(), responses=responses)

        return await self._change(task_id, apply)

    # -- cancelling and watching --------------------------------------------------------------------
    async def cancel(self, task_id: str) -> Task:
        """Queued: cancelled at once. Leased: the holder is asked to stop (see wait_cancel_requested)."""
        return await self._change(task_id, lambda t: machine.transition(t, "cancel", now=self.clock()))

    async def wait_changed(self, task_id: str, after_version: int) -> Task:
        """The task once its version is past ``after_version``."""
        while True:
            woken = self._signal(task_id).arm()
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
        await self._cancel_event(task_id).wait()

    def forget(self, task_id: str) -> None:
        """Drop the wake-up signal of a task nobody watches any more."""
        self._task_signals.pop(task_id, None)

    # -- maintenance ---------------------------------------------------------------------------------
    async def run_maintenance(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover expired leases exactly when they expire; prune finished tasks past retention."""
        await self._load_counts()
        task_status.started()
        next_prune = trio.current_time()
        failures = 0
        while True:
            woken = self._leases.arm()
            try:
                expired = await self._write(self.store.expire_leases, now=self.clock(), backoff=self.backoff)
                for task in expired:
                    self._expiries += 1
                    self._changed(replace(task, state=TaskState.LEASED), task)
                if trio.current_time() >= next_prune:
                    pruned = await self._write(self.store.prune, now=self.clock(),
                                               finished_before=self.clock() - self.settings.retention_seconds)
                    if pruned:
                        await self._load_counts()
                    next_prune = trio.current_time() + PRUNE_EVERY_SECONDS
                lease_at, _ = await self._run(self.store.next_deadlines)
            except StoreUnavailable as exc:  # disk full, database locked: nothing changed; try again
                failures += 1
                delay = unavailable_delay(failures)
                log.warning("lease expiry and pruning failed (%s); retrying in %.2f s", exc, delay)
                await trio.sleep(delay)
                continue
            failures = 0
            deadline = next_prune
            if lease_at is not None:
                deadline = min(deadline, trio.current_time() + max(0.0, lease_at - self.clock()) + 0.001)
            with trio.move_on_at(deadline):
                await woken.wait()


async def open_task_queue(
    path: Path, settings: TaskQueueSettings, *, clock: Callable[[], float] = time.time
) -> TaskQueue:
    """Open (creating or migrating) the queue database at ``path``."""
    store = await trio.to_thread.run_sync(lambda: Store(path, synchronous=settings.synchronous.upper()))
    queue = TaskQueue(store, settings, clock=clock)
    await queue._load_counts()
    return queue

