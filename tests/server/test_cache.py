"""The TTL cache behind the cache_* tools (synchronous, clock injected)."""

from __future__ import annotations

import pytest

from triomcp.errors import ToolError
from triomcp.server.cache import TtlCache


def test_values_expire_after_their_ttl() -> None:
    now = [0.0]
    cache = TtlCache(clock=lambda: now[0])
    cache.set("k", {"v": 1}, ttl_s=10)
    assert cache.get("k") == (True, {"v": 1}, 10.0)
    now[0] = 9.5
    assert cache.get("k")[0] is True
    now[0] = 10.0
    assert cache.get("k") == (False, None, None)
    assert cache.statistics().entries == 0


def test_least_recently_used_goes_first_when_full() -> None:
    cache = TtlCache(max_entries=2)
    cache.set("a", 1, 60)
    cache.set("b", 2, 60)
    cache.get("a")
    cache.set("c", 3, 60)
    assert [cache.get(k)[0] for k in "abc"] == [True, False, True]
    assert cache.statistics().evictions == 1


def test_limits_are_enforced() -> None:
    cache = TtlCache(max_value_bytes=10)
    with pytest.raises(ToolError, match="limit is 10"):
        cache.set("k", "x" * 20, 60)
    with pytest.raises(ToolError):
        cache.set("", 1, 60)
    with pytest.raises(ToolError):
        cache.set("k", 1, 0)
    assert cache.delete("k") is False
    cache.set("k", 1, 5)
    assert cache.delete("k") is True and cache.statistics().bytes == 0
