"""Work announcements: owners announce their surplus over GossipSub, idle workers claim it.

Real servers with real libp2p nodes in one process (``tests.helpers.mesh``). Every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.mesh import mesh, tool_calls
from triomcp.taskqueue import scheduling

STATUS = {"tool": "p2p_status", "arguments": {}}


async def test_an_idle_mesh_sends_no_claims_and_one_announcement_wakes_a_worker(tmp_path: Path) -> None:
    # A has no workers of its own: everything it queues is surplus. B's slots wait for an announcement.
    async with mesh(tmp_path, ["a", "b"], per_node={"a": {"taskqueue": {"concurrency": {"*": 0}}},
                                                    "b": {}}) as nodes:
        app_a, app_b = nodes["a"][1], nodes["b"][1]
        queue_a = app_a.state.services.queue
        b_id = app_b.state.services.node.peer_id
        await trio.sleep(1.5)  # idle: nobody asks anybody for work
        assert tool_calls(app_a, "taskqueue_claim") == 0
        assert app_a.state.services.extras["mesh"].statistics().announced == 0
        with trio.fail_after(20):
            task = await queue_a.submit("tool.call", STATUS)
            done = await queue_a.wait_finished(task.id)
        assert done.state.value == "succeeded" and done.result["peer_id"] == b_id
        stats = app_b.state.services.extras["mesh"].statistics()
        assert stats.heard >= 1 and stats.leases == 1
        assert tool_calls(app_a, "taskqueue_claim") <= 2  # one claim (a second only if an announcement repeated)


async def test_an_owner_whose_workers_are_free_keeps_its_work(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["a", "b"], taskqueue={"concurrency": {"*": 4}}) as nodes:
        app_a, app_b = nodes["a"][1], nodes["b"][1]
        queue_a = app_a.state.services.queue
        a_id = app_a.state.services.node.peer_id
        with trio.fail_after(20):
            for _ in range(6):  # one at a time: A's four workers are never all busy
                task = await queue_a.submit("tool.call", STATUS)
                done = await queue_a.wait_finished(task.id)
                assert done.result["peer_id"] == a_id
        assert app_a.state.services.extras["mesh"].statistics().announced == 0
        assert tool_calls(app_a, "taskqueue_claim") == 0
        assert app_b.state.services.extras["mesh"].statistics().claims == 0


async def test_a_lost_announcement_is_repeated_while_work_remains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: B's planner never hears the first announcement of each owner.
    heard = scheduling.ClaimPlanner.heard
    dropped: list[str] = []

    def lossy(self: scheduling.ClaimPlanner, now: float, announcement: scheduling.Announcement) -> None:
        if announcement.owner not in dropped:
            dropped.append(announcement.owner)
            return
        heard(self, now, announcement)

    monkeypatch.setattr(scheduling.ClaimPlanner, "heard", lossy)
    async with mesh(tmp_path, ["a", "b"], per_node={"a": {"taskqueue": {"concurrency": {"*": 0}}},
                                                    "b": {}}) as nodes:
        app_a, app_b = nodes["a"][1], nodes["b"][1]
        queue_a = app_a.state.services.queue
        with trio.fail_after(20):
            task = await queue_a.submit("tool.call", STATUS)
            done = await queue_a.wait_finished(task.id)
        assert done.result["peer_id"] == app_b.state.services.node.peer_id
        assert dropped == [app_a.state.services.node.peer_id]
        assert app_a.state.services.extras["mesh"].statistics().announced >= 2


async def test_work_spreads_over_three_workers_and_each_task_runs_once(tmp_path: Path) -> None:
    tasks = 60
    handlers = {"say_who": "tests.handlers:sleep_then_say_who"}
    workers: dict[str, Any] = {"taskqueue": {"concurrency": {"*": 0}, "mesh_concurrency": {"*": 2},
                                             "handlers": handlers}}
    async with mesh(tmp_path, ["a", "b", "c", "d"], per_node={
            "a": {"taskqueue": {"concurrency": {"*": 0}, "handlers": handlers}}, "b": workers, "c": workers,
            "d": workers}) as nodes:
        queue_a = nodes["a"][1].state.services.queue
        ran: dict[str, int] = {}
        with trio.fail_after(60):
            ids = [(await queue_a.submit("say_who", {"seconds": 0.02})).id for _ in range(tasks)]
            for task_id in ids:
                done = await queue_a.wait_finished(task_id)
                assert done.state.value == "succeeded" and done.attempts == 1, done
                ran[done.result["ran_by"]] = ran.get(done.result["ran_by"], 0) + 1
        peers = {nodes[n][1].state.services.node.peer_id for n in ("b", "c", "d")}
        assert set(ran) == peers, ran  # A has no workers: B, C and D ran everything
        # The same capacity each (ideal 20): each runs a fair part of it.
        assert min(ran.values()) >= 8, ran


# Closing ten in-process hosts right after connections were trimmed and dialed again sometimes
# leaves one libp2p TCP socket to the garbage collector (1 run in 3 here, 0 in the next 2): the
# teardown race tests/server/test_relay.py describes, not a socket per trim (the trimming tests of
# tests/p2p/test_connections.py run without it).
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_node_with_two_connections_runs_work_from_all_nine_owners(tmp_path: Path) -> None:
    # X keeps at most 2 connections in a mesh of 10; the nine owners have no workers of their own
    # (nor slots for others'), so every task must reach X by gossip and be claimed on a dial on demand.
    handlers = {"say_who": "tests.handlers:sleep_then_say_who"}
    owners = [f"n{i}" for i in range(9)]
    owner: dict[str, Any] = {"taskqueue": {"concurrency": {"*": 0}, "mesh_concurrency": {"*": 0},
                                           "handlers": handlers}}
    per_node = {n: owner for n in owners}
    per_node["x"] = {"p2p": {"connections_low": 2, "connections_high": 2},
                     "taskqueue": {"concurrency": {"*": 0}, "mesh_concurrency": {"*": 4}, "handlers": handlers}}
    async with mesh(tmp_path, [*owners, "x"], per_node=per_node) as nodes:
        x = nodes["x"][1].state.services.node
        x.trim_grace = 0.2
        with trio.fail_after(60):
            while len(x.connected_peers()) > 2:  # the trimmer brings X down to its high water mark
                await x.wait_peers_changed()
            ids = [(n, (await nodes[n][1].state.services.queue.submit("say_who", {"seconds": 0.01})).id)
                   for n in owners]
            for n, task_id in ids:
                done = await nodes[n][1].state.services.queue.wait_finished(task_id)
                assert done.state.value == "succeeded" and done.result["ran_by"] == x.peer_id, done
        stats = x.statistics()
        assert stats.on_demand_dials >= 1  # some owners were not connected when they announced
        assert nodes["x"][1].state.services.extras["mesh"].statistics().leases == len(owners)
