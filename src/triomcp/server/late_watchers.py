"""Disconnect watchers started only for calls that outlive a short delay (one sweeper task)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = ["LateWatchers"]

log = logging.getLogger("triomcp.http")


@dataclass(slots=True)
class _Pending:
    since: float
    nursery: trio.Nursery | None
    """Where the watcher runs: the call's own nursery, or None for the sweeper's."""
    watch: Callable[[], Awaitable[None]]
    watching: bool = False
    scope: trio.CancelScope | None = None
    """A watcher running in the sweeper's nursery: cancelled when the call ends."""


class LateWatchers:
    """Gives a call its disconnect watcher only once it has run ``after`` seconds.

    A watcher is a Trio task; spawning it and cancelling it when the call ends cost about
    150 µs per call on the benchmark machine, more than the MCP engine itself, and most calls
    end long before a client could leave or a keep-alive is due. One sweeper task (run by the
    app's lifespan) starts a watcher for each call still running after ``after`` seconds.

    A call that passes no nursery (``add(None, ...)``, only while :attr:`running`) has its
    watcher run in the sweeper's own nursery, inside a cancel scope that :meth:`remove` cancels:
    the call then needs no nursery of its own, which cost about 12 µs and a schedule point per
    call. Such a watcher must not raise (it is caught and logged here, so that it cannot end
    the sweeper); the endpoint's watcher keeps its own error for its call.
    Without the sweeper running, every call gets its watcher at once, in the nursery it passes."""

    def __init__(self, after: float = 0.05) -> None:
        self.after = after
        self._calls: dict[int, _Pending] = {}
        self._ids = itertools.count()
        self._wake = trio.Event()
        self._running = False
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        """The sweeper runs: a call may pass no nursery."""
        return self._nursery is not None

    def add(self, nursery: trio.Nursery | None, watch: Callable[[], Awaitable[None]]) -> int:
        key = next(self._ids)
        pending = self._calls[key] = _Pending(trio.current_time(), nursery, watch)
        if not self._running:
            if nursery is None:
                del self._calls[key]
                raise RuntimeError("LateWatchers.add(None, ...) needs the sweeper running")
            pending.watching = True
            nursery.start_soon(watch)
        self._wake.set()
        return key

    def remove(self, key: int) -> bool:
        """Forget the call; True when its watcher was started in the call's nursery (the caller
        cancels it). A watcher running in the sweeper's nursery is cancelled here."""
        pending = self._calls.pop(key, None)
        if pending is None or not pending.watching:
            return False
        if pending.scope is not None:
            pending.scope.cancel()
            return False
        return True

    def _start(self, pending: _Pending) -> None:
        pending.watching = True
        if pending.nursery is not None:
            pending.nursery.start_soon(pending.watch)
            return
        assert self._nursery is not None
        pending.scope = trio.CancelScope()
        self._nursery.start_soon(self._watch_here, pending.scope, pending.watch)

    @staticmethod
    async def _watch_here(scope: trio.CancelScope, watch: Callable[[], Awaitable[None]]) -> None:
        with scope:
            try:
                await watch()
            except Exception:
                log.exception("a call's disconnect watcher failed")

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._running = True
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    if not self._calls:
                        self._wake = trio.Event()
                        await self._wake.wait()
                    await trio.sleep(self.after)
                    now = trio.current_time()
                    for pending in list(self._calls.values()):
                        if not pending.watching and now - pending.since >= self.after:
                            self._start(pending)
            finally:
                self._running = False
                self._nursery = None
                for pending in self._calls.values():  # calls still running keep their watchers
                    if not pending.watching and pending.nursery is not None:
                        pending.watching = True
                        pending.nursery.start_soon(pending.watch)
                # Those in this nursery are cancelled with it; a call that passed none, still running
                # now (the server has stopped serving), goes on without a watcher.
                nursery.cancel_scope.cancel()
