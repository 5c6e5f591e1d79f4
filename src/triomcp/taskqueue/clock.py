"""The queue's clock: epoch seconds that advance with Trio's clock.

Stored timestamps are epoch seconds (MCP tasks show them as ISO times, TTLs are
counted from them), but every wait is a Trio deadline. :class:`QueueClock`
reads the wall clock once, when the queue opens, and from then on advances with
``trio.current_time()``:

- one clock for both: a lease expiry stored as epoch seconds is exactly a Trio
  deadline (:meth:`QueueClock.deadline`), with no second reading of the wall clock;
- Trio's clock is monotonic, so a wall-clock step (NTP, an operator) while the
  queue runs neither expires leases early nor holds them past their time;
- under ``trio.testing.MockClock`` (``autojump_clock``) leases, renewals,
  retries and expiries run in virtual time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio

__all__ = ["QueueClock"]


@dataclass(frozen=True, slots=True)
class QueueClock:
    trio_clock: trio.abc.Clock
    """The clock of the Trio run that opened the queue (safe to read from the database thread)."""
    offset: float
    """Epoch seconds minus Trio seconds, taken once at open."""

    @classmethod
    def current(cls) -> QueueClock:
        """The clock of the current Trio run, anchored to the wall clock now."""
        trio_clock = trio.lowlevel.current_clock()
        return cls(trio_clock, time.time() - trio_clock.current_time())

    def now(self) -> float:
        """Epoch seconds."""
        return self.trio_clock.current_time() + self.offset

    def deadline(self, epoch: float) -> float:
        """The Trio deadline (for ``trio.move_on_at``) of the instant ``epoch``."""
        return epoch - self.offset
