"""LateWatchers: a call gets its disconnect watcher only once it has run a while."""

from __future__ import annotations

import trio
import trio.testing

from triomcp.server.late_watchers import LateWatchers


async def test_fast_calls_get_no_watcher_and_slow_ones_do(autojump_clock: trio.testing.MockClock) -> None:
    watchers = LateWatchers(after=0.05)
    started: list[str] = []

    def watcher(name: str):  # type: ignore[no-untyped-def]
        async def watch() -> None:
            started.append(name)
            await trio.sleep_forever()
        return watch

    async with trio.open_nursery() as outer:
        await outer.start(watchers.run)
        async with trio.open_nursery() as call:
            fast = watchers.add(call, watcher("fast"))
            await trio.sleep(0.01)
            assert watchers.remove(fast) is False  # ended before its watcher was due: none was started
        async with trio.open_nursery() as call:
            slow = watchers.add(call, watcher("slow"))
            await trio.sleep(0.2)
            assert started == ["slow"]
            assert watchers.remove(slow) is True  # the caller cancels it
            call.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    async with trio.open_nursery() as call:  # no sweeper running: the watcher starts at once
        key = watchers.add(call, watcher("unswept"))
        await trio.testing.wait_all_tasks_blocked()
        assert started == ["slow", "unswept"] and watchers.remove(key) is True
        call.cancel_scope.cancel()
