"""How the queue reaches its store: one database thread, and group commit.

- Blocking SQLite calls run in ``trio.to_thread`` on the store's one connection; a
  ``CapacityLimiter(1)`` serialises them. ``thread=False`` runs them on the event loop
  itself, blocking it: for tests under ``trio.testing.MockClock`` (``autojump_clock``),
  whose virtual clock jumps to the next deadline whenever every task waits, a task waiting
  for the database thread included (so a lease could run out while SQLite writes).
- Group commit: changes waiting at the same time are committed in one transaction (one
  fsync). The first caller to find no commit in flight takes every waiting operation to the
  database and runs them in one transaction (``Store.batch``: each in its own savepoint, so
  one refused operation changes nothing while the others commit); the others wait for that
  commit and get their own result or exception. Nothing is acknowledged before it is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from triomcp.taskqueue.signals import Signal
from triomcp.taskqueue.store import Store

__all__ = ["Database"]

T = TypeVar("T")


class _Op:
    __slots__ = ("done", "fn", "ok", "value")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = False
        self.ok = False
        self.value: Any = None


class Database:
    def __init__(self, store: Store, *, thread: bool = True) -> None:
        self.store = store
        self._thread = thread
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[_Op] = []
        self._flushing = False
        self._flushed = Signal()

    async def call(self, fn: Callable[[], T]) -> T:
        """A blocking call: in the database thread (or, ``thread=False``, right here)."""
        if not self._thread:
            await trio.lowlevel.checkpoint()
            return fn()
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read (or a one-off), on its own."""
        return await self.call(partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A change, committed with whatever other changes are waiting; its result, or its exception."""
        op = _Op(partial(fn, *args, **kwargs))
        self._pending.append(op)
        while not op.done:
            if self._flushing:
                await self._flushed.arm().wait()
                continue
            self._flushing = True
            batch, self._pending = self._pending, []
            fns = [o.fn for o in batch]
            try:
                # Shielded: the operations are in flight for every waiter, not just this one.
                with trio.CancelScope(shield=True):
                    results = await self.call(partial(self.store.batch, fns))
            finally:
                self._flushing = False
            for o, (ok, value) in zip(batch, results, strict=True):
                o.done, o.ok, o.value = True, ok, value
            self._flushed.fire()
        if op.ok:
            return op.value  # type: ignore[no-any-return]
        raise op.value
