"""Wake-ups for event-driven waits (never polling): a re-armable broadcast, and the per-task ones."""

from __future__ import annotations

import trio

from triomcp.taskqueue.model import Task, TaskState

__all__ = ["Signal", "TaskWakeups"]


class Signal:
    """``arm()`` returns an event that the next ``fire()`` sets; arm before looking, then wait.

    Arming before reading the state that decides whether to wait means a change that lands
    between the read and the wait still wakes the waiter.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    def arm(self) -> trio.Event:
        return self._event


class TaskWakeups:
    """Per task: a :class:`Signal` fired on every change (for watchers), and an event set once a cancel is
    requested (for the local worker running it; no database read)."""

    def __init__(self) -> None:
        self._changes: dict[str, Signal] = {}
        self._cancels: dict[str, trio.Event] = {}
        """Leased tasks only: dropped when the task leaves LEASED."""

    def changes(self, task_id: str) -> Signal:
        signal = self._changes.get(task_id)
        if signal is None:
            signal = self._changes[task_id] = Signal()
        return signal

    def cancel_requested(self, task_id: str) -> trio.Event:
        event = self._cancels.get(task_id)
        if event is None:
            event = self._cancels[task_id] = trio.Event()
        return event

    def changed(self, task: Task) -> None:
        signal = self._changes.get(task.id)
        if signal is not None:
            signal.fire()
        if task.cancel_requested:
            self.cancel_requested(task.id).set()
        if task.state is not TaskState.LEASED:
            self._cancels.pop(task.id, None)

    def forget(self, task_id: str) -> None:
        """Drop the change signal of a task nobody watches any more."""
        self._changes.pop(task_id, None)
