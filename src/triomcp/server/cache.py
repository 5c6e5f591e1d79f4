"""A bounded TTL cache for the ``cache_*`` tools (per node, optionally replicated by the tools)."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from triomcp.errors import ToolError

__all__ = ["CacheStatistics", "TtlCache"]


@dataclass(frozen=True)
class CacheStatistics:
    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int


class TtlCache:
    """Keys expire after their TTL; the least recently used entry goes first when full."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_value_bytes: int = 256 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def get(self, key: str) -> tuple[bool, Any, float | None]:
        """``(found, value, seconds left)``."""
        item = self._items.get(key)
        now = self._clock()
        if item is None or item[0] <= now:
            if item is not None:
                self._drop(key)
            self._misses += 1
            return False, None, None
        self._items.move_to_end(key)
        self._hits += 1
        return True, item[1], item[0] - now

    def set(self, key: str, value: Any, ttl_s: float) -> None:
        if not key or len(key) > 512:
            raise ToolError("cache keys must be 1 to 512 characters", code="invalid_key")
        if ttl_s <= 0:
            raise ToolError("ttl_s must be positive", code="invalid_ttl")
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > self.max_value_bytes:
            raise ToolError(f"value is {size} bytes; the limit is {self.max_value_bytes}", code="value_too_large")
        if key in self._items:
            self._drop(key)
        self._items[key] = (self._clock() + ttl_s, value, size)
        self._bytes += size
        self._evict()

    def delete(self, key: str) -> bool:
        if key in self._items:
            self._drop(key)
            return True
        return False

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(len(self._items), self._bytes, self._hits, self._misses, self._evictions)

    def _drop(self, key: str) -> None:
        _, _, size = self._items.pop(key)
        self._bytes -= size

    def _evict(self) -> None:
        if len(self._items) <= self.max_entries and self._bytes <= self.max_total_bytes:
            return
        now = self._clock()  # over a limit: expired entries go first, then the least recently used
        for key in [k for k, (expires, _, _) in self._items.items() if expires <= now]:
            self._drop(key)
        while len(self._items) > self.max_entries or self._bytes > self.max_total_bytes:
            key = next(iter(self._items))
            self._drop(key)
            self._evictions += 1
