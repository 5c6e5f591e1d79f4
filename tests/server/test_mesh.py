"""Two and three real nodes in one process: HTTP MCP on A, the work on B, the result back on A."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from mcp.client import Client

from harness.mcp_http import modern_call
from tests.helpers.mesh import mesh, structured, tool_calls


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_task_submitted_on_a_runs_on_b_and_the_result_returns(tmp_path: Path, mode: str) -> None:
    # Mesh claiming off: only B's own workers may run B's tasks (with it on, A could take the task).
    async with mesh(tmp_path, ["a", "b"], taskqueue={"mesh": False}) as nodes:
        url_a, _app_a = nodes["a"]
        b_id = nodes["b"][1].state.services.node.peer_id
        with trio.fail_after(30):
            async with Client(f"{url_a}/mcp", mode=mode) as client:  # type: ignore[arg-type]
                submitted = structured(await client.call_tool("taskqueue_submit", {
                    "task_type": "tool.call", "payload": {"tool": "p2p_status", "arguments": {}}, "peer": b_id}))
                assert submitted["owner"] == b_id
                waited = structured(await client.call_tool("taskqueue_wait", {
                    "task_id": submitted["task_id"], "peer": b_id, "timeout_s": 20}))
                assert waited["finished"] is True
                task = waited["task"]
                assert task["state"] == "succeeded"
                assert task["result"]["peer_id"] == b_id  # it ran on B
                got = structured(await client.call_tool("taskqueue_get", {"task_id": submitted["task_id"],
                                                                            "peer": b_id}))
                assert got["task"]["result"] == task["result"]


async def test_p2p_tools_between_two_servers(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["a", "b"]) as nodes:
        url_a, _ = nodes["a"]
        b_node = nodes["b"][1].state.services.node
        with trio.fail_after(30):
            async with Client(f"{url_a}/mcp") as client:
                status = structured(await client.call_tool("p2p_status", {}))
                assert b_node.peer_id in status["connected_peers"]
                pong = structured(await client.call_tool("p2p_ping", {"peer": b_node.peer_id}))
                assert pong["rtt_ms"] > 0
                called = structured(await client.call_tool("p2p_call_tool", {
                    "peer": b_node.peer_id, "tool": "echo", "arguments": {"text": "via libp2p"}}))
                assert called["result"] == {"ok": True, "text": "via libp2p"}
                peers = structured(await client.call_tool("p2p_peers", {}))
                assert any(p["peer_id"] == b_node.peer_id and p["connected"] for p in peers["peers"])
                stored = structured(await client.call_tool("cache_set", {"key": "k", "value": {"v": 1},
                                                                          "ttl_s": 60, "replicate": True}))
                assert stored["replicated_to"] == [b_node.peer_id]
                assert nodes["b"][1].state.services.cache.get("k")[1] == {"v": 1}
                assert structured(await client.call_tool("cache_get", {"key": "k"}))["value"] == {"v": 1}


async def test_the_request_id_and_caller_travel_to_the_peer(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["a", "b"]) as nodes:
        url_a, app_a = nodes["a"]
        a_id = app_a.state.services.node.peer_id
        b_id = nodes["b"][1].state.services.node.peer_id
        headers, body = modern_call("p2p_call_tool", {"peer": b_id, "tool": "whoami"}, accept="application/json")
        headers["x-request-id"] = "trace-mesh-1"
        async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
            r = await c.post("/mcp", json=body, headers=headers)
        remote = r.json()["result"]["structuredContent"]["result"]
        assert remote == {"ok": True, "principal": f"peer:{a_id}|local", "request_id": "trace-mesh-1"}


async def test_a_worker_on_b_claims_from_a_and_cancel_reaches_it(tmp_path: Path) -> None:
    handlers = {"say_who": "tests.handlers:sleep_then_say_who"}
    async with mesh(tmp_path, ["a", "b"], taskqueue={"concurrency": {"*": 1}, "handlers": handlers}) as nodes:
        url_a, app_a = nodes["a"]
        app_b = nodes["b"][1]
        b_id = app_b.state.services.node.peer_id
        queue_a = app_a.state.services.queue
        with trio.fail_after(30):
            async with Client(f"{url_a}/mcp") as client:
                # More tasks on A's queue than A's one worker takes: A announces the rest, B takes some.
                ids = [(await queue_a.submit("say_who", {"seconds": 0.05})).id for _ in range(12)]
                ran_on = set()
                for task_id in ids:
                    done = await queue_a.wait_finished(task_id)
                    assert done.state.value == "succeeded" and done.attempts == 1
                    ran_on.add(done.result["ran_by"])
                assert ran_on == {"local", b_id}
                # Cancel a blocking task wherever it runs.
                out = structured(await client.call_tool("taskqueue_submit", {
                    "task_type": "tool.call", "payload": {"tool": "block", "arguments": {"text": "mesh-cancel"}}}))
                task_id = out["task_id"]
                while (task := await queue_a.get(task_id)).state.value != "leased":
                    await queue_a.wait_changed(task_id, task.version)  # the version the state was read at
                cancelled = structured(await client.call_tool("taskqueue_cancel", {"task_id": task_id}))
                assert cancelled["task"]["cancel_requested"] is True
                final = await queue_a.wait_finished(task_id)
                assert final.state.value == "cancelled"


async def test_more_mesh_workers_than_the_peer_serves_requests_at_once(tmp_path: Path) -> None:
    # 80 mesh workers on B against A's limit of 64 requests in flight per peer: idle long-polls
    # must not crowd out the renewals and outcomes, or finished work would be run again.
    tasks = 150
    async with mesh(tmp_path, ["a", "b"], per_node={
            "a": {"taskqueue": {"concurrency": {"*": 0}}},
            "b": {"taskqueue": {"concurrency": {"*": 0}, "mesh_concurrency": {"*": 80}}}}) as nodes:
        app_a, app_b = nodes["a"][1], nodes["b"][1]
        queue_a = app_a.state.services.queue
        b_id = app_b.state.services.node.peer_id
        with trio.fail_after(60):
            ids = [(await queue_a.submit("tool.call", {"tool": "p2p_status", "arguments": {}})).id
                   for _ in range(tasks)]
            for task_id in ids:
                done = await queue_a.wait_finished(task_id)
                assert done.state.value == "succeeded", done
                assert done.attempts == 1, done  # each ran once: no outcome was lost
                assert done.result["peer_id"] == b_id
        # Busy workers claim their next task along with each outcome, so most tasks cost one
        # round trip, not a claim and a complete each.
        claims, completes = tool_calls(app_a, "taskqueue_claim"), tool_calls(app_a, "taskqueue_complete")
        assert completes == tasks
        assert claims < tasks, (claims, completes)
