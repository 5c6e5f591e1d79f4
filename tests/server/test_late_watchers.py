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


async def test_a_call_without_a_nursery_has_its_watcher_run_by_the_sweeper(
        autojump_clock: trio.testing.MockClock) -> None:
    watchers = LateWatchers(after=0.05)
    states: list[str] = []

    async def watch() -> None:
        states.append("watching")
        try:
            await trio.sleep_forever()
        finally:
            states.append("cancelled")

    async def failing() -> None:
        raise RuntimeError("the watcher broke")

    async with trio.open_nursery() as outer:
        assert not watchers.running
        await outer.start(watchers.run)
        assert watchers.running
        fast = watchers.add(None, watch)
        assert watchers.remove(fast) is False and states == []
        slow = watchers.add(None, watch)
        await trio.sleep(0.2)
        assert states == ["watching"]
        assert watchers.remove(slow) is False  # nothing for the caller to cancel: done here
        await trio.testing.wait_all_tasks_blocked()
        assert states == ["watching", "cancelled"]
        broken = watchers.add(None, failing)
        await trio.sleep(0.2)  # its error is logged; the sweeper goes on
        watchers.remove(broken)
        again = watchers.add(None, watch)
        await trio.sleep(0.2)
        assert states[-1] == "watching" and watchers.remove(again) is False
        outer.cancel_scope.cancel()
    assert not watchers.running
