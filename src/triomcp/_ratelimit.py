"""A token bucket: the one rate limiter, for HTTP clients (``server/guard.py``) and for peers
(``p2p/node.py``). It imports only trio, for its clock (so ``autojump_clock`` drives it in tests)."""

from __future__ import annotations

import trio

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst`` (a client's or peer's budget)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = trio.current_time()

    def _refill(self) -> None:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def full(self) -> bool:
        """Refilled to the brim: its owner has been idle long enough to be forgotten."""
        self._refill()
        return self.tokens >= self.burst

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
