"""Backoff and retry: the one place for both (every layer may import it; it imports only trio).

- :class:`Backoff`: exponential backoff with full jitter, ``uniform(0, min(cap, base * 2 ** (n - 1)))``
  for the ``n``-th failure in a row; for retries that many parties make at once (task retries,
  redials), so they spread out.
- :func:`capped_delay`: the same growth without jitter, ``min(cap, base * 2 ** n)``; for one party
  waiting on one resource (the database, a peer it is reporting to).
- :func:`retry_transient`: call a function until it stops raising one of the transient errors,
  pausing :func:`capped_delay` between attempts; the caller bounds it (``trio.fail_after``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["Backoff", "capped_delay", "retry_transient"]

T = TypeVar("T")


class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2 ** (attempt - 1)))."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, min(self.cap, self.base * 2 ** max(0, attempt - 1)))


def capped_delay(failures: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: ``base * 2 ** failures``, at most ``cap``."""
    return float(min(cap, base * 2 ** failures))


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[Exception], ...],
    what: str,
    log: logging.Logger,
    base: float = 0.05,
    cap: float = 5.0,
) -> T:
    """``await fn()`` until it returns; each ``transient`` error is logged (the first at WARNING,
    the rest at DEBUG) and followed by a pause of :func:`capped_delay`. Other errors propagate.
    There is no deadline here: the caller sets one (trio's rule: the caller owns timeouts)."""
    failures = 0
    while True:
        try:
            result = await fn()
        except transient as exc:
            delay = capped_delay(failures, base=base, cap=cap)
            (log.warning if failures == 0 else log.debug)("%s failed (%s); retrying in %.2f s", what, exc, delay)
            failures += 1
            await trio.sleep(delay)
            continue
        if failures:
            log.info("%s succeeded after %d retries", what, failures)
        return result
