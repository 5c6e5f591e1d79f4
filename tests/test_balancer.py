"""Many nodes, one MCP server, end to end: three ``triomcp serve`` processes in one mesh behind HAProxy
(round-robin, no stickiness), and the official MCP Python SDK client through it in every mode.

Every request of a session, stream or task may land on any node; the node holding it serves it over
the mesh (``triomcp.server.relay``). Each test counts failures and asserts there are none. The
last one kills a node: its sessions end cleanly (404, then a new session works), the others go
on, and its durable tasks are readable again once it is back. They need ``haproxy`` (``make haproxy``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import mcp_types as types
import pytest
import trio
from mcp.client import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from harness.balancer import Cluster, cluster
from harness.mcp_http import INITIALIZED, JSON_HEADERS, initialize, legacy_headers, modern_headers, tool_call
from tests.helpers.http import meta
from tests.helpers.tasks import modern, poll_until
from triomcp._owner import owner_tag, tag_of

pytestmark = pytest.mark.slow

MODES = ["legacy", "2026-07-28", "auto"]
SESSIONS = 4
CALLS = 12


@pytest.fixture(scope="module")
def mesh3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("balanced"), 3, settings={"mcp": {"conformance_fixtures": True}}) as c:
        yield c


def _metric(c: Cluster, name: str, **labels: str) -> float:
    """A counter summed over every node (its ``/metrics``)."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for node in c.nodes:
        if not node.alive:
            continue
        text = httpx.get(f"{node.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(w in line for w in want):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def _never_task(client: Client) -> str:
    """A task no worker has a handler for: it stays queued (a call waiting on it waits)."""
    submitted = await client.call_tool("taskqueue_submit", {"task_type": "test.never", "payload": {}})
    assert submitted.is_error is False, submitted
    return str(submitted.structured_content["task_id"])  # type: ignore[index]


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_calls_progress_elicitation_and_cancellation_through_the_balancer(
        mesh3: Cluster, mode: str) -> None:
    failures: list[str] = []
    progress: list[float] = []
    asked: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.org"})

    cancelled_before = _metric(mesh3, "triomcp_mcp_tool_calls_total", tool="taskqueue_wait", outcome="cancelled")

    async def one_session(i: int) -> None:
        async with Client(f"{mesh3.url}/mcp", mode=mode, elicitation_callback=elicit) as client:
            for n in range(CALLS):
                result = await client.call_tool("test_simple_text", {})
                if result.is_error:
                    failures.append(f"session {i} call {n}: {result}")
            result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
            if result.is_error:
                failures.append(f"session {i} progress: {result}")
            result = await client.call_tool("test_elicitation", {"message": f"who are you, {i}?"})
            if result.is_error:
                failures.append(f"session {i} elicitation: {result}")
            task_id = await _never_task(client)
            with trio.move_on_after(1.0):  # cancelled while it waits: the handler stops where it runs
                await client.call_tool("taskqueue_wait", {"task_id": task_id, "timeout_s": 60})
                failures.append(f"session {i}: the wait ended by itself")
            again = await client.call_tool("taskqueue_cancel", {"task_id": task_id})
            if again.is_error or again.structured_content["task"]["state"] != "cancelled":  # type: ignore[index]
                failures.append(f"session {i} after the cancel: {again}")

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for i in range(SESSIONS):
                nursery.start_soon(one_session, i)
    assert failures == []
    assert len(asked) == SESSIONS
    assert progress.count(100) == SESSIONS
    for _ in range(50):  # every cancelled wait ended on the node that ran it (bounded: 5 s)
        cancelled = _metric(mesh3, "triomcp_mcp_tool_calls_total", tool="taskqueue_wait", outcome="cancelled")
        if cancelled - cancelled_before >= SESSIONS:
            break
        await trio.sleep(0.1)
    assert cancelled - cancelled_before == SESSIONS


async def test_a_resumed_stream_and_a_get_stream_notification_in_a_legacy_session(mesh3: Cluster) -> None:
    updated: list[str] = []
    logs: list[Any] = []

    arrived = trio.Event()

    async def on_message(message: Any) -> None:
        nonlocal arrived
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            arrived.set()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    with trio.fail_after(60):
        async with Client(f"{mesh3.url}/mcp", mode="legacy", message_handler=on_message,
                          logging_callback=on_log) as client:
            # SSE polling: the node ends the response mid-call, the client resumes with Last-Event-ID
            # (on whichever node the balancer picks) and gets the result.
            result = await client.call_tool("test_reconnection", {})
            assert result.is_error is False, result
            for _ in range(20):  # until the GET stream is open (it may land anywhere; bounded: 20 x 0.5 s)
                task_id = await _never_task(client)
                uri = f"triomcp://tasks/{task_id}"
                await _subscribe(client, uri)
                await client.call_tool("taskqueue_cancel", {"task_id": task_id})
                with trio.move_on_after(0.5):
                    while uri not in updated:
                        await arrived.wait()
                        arrived = trio.Event()
                if uri in updated:
                    break
    assert uri in updated
    assert "test_reconnection started" in str(logs)


async def test_mcp_tasks_and_task_tools_through_the_balancer(mesh3: Cluster) -> None:
    tags = {owner_tag(n.peer_id) for n in mesh3.nodes}
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=mesh3.url, timeout=20) as c:
        with trio.fail_after(90):
            owners = set()
            for i in range(6):  # MCP tasks (the tasks extension): created, read, updated, cancelled
                r = await modern(c, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 30}},
                                 name="slow_compute")
                created = r.json().get("result", {})
                if created.get("resultType") != "task":
                    failures.append(f"create {i}: {r.text}")
                    continue
                task_id = created["taskId"]
                owners.add(tag_of(task_id))
                for _ in range(3):
                    got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()
                    if got.get("result", {}).get("status") not in ("working", "input_required"):
                        failures.append(f"get {i}: {got}")
                ack = (await modern(c, "tasks/update", {"taskId": task_id, "inputResponses": {}},
                                    name=task_id)).json()
                if "result" not in ack:
                    failures.append(f"update {i}: {ack}")
                ack = (await modern(c, "tasks/cancel", {"taskId": task_id}, name=task_id)).json()
                if "result" not in ack:
                    failures.append(f"cancel {i}: {ack}")
                done = await poll_until(c, task_id, {"cancelled", "completed", "failed"})
                if done["status"] != "cancelled":
                    failures.append(f"after cancel {i}: {done}")
            assert owners <= tags and len(owners) >= 2
            for i in range(9):  # the task tools, by id alone
                h = modern_headers("tools/call", "taskqueue_submit")
                body = tool_call("taskqueue_submit", {"task_type": "test.never", "payload": {"i": i}}, i,
                                 meta=meta())
                task_id = (await c.post("/mcp", headers=h, json=body)).json()["result"]["structuredContent"]["task_id"]
                for tool in ("taskqueue_get", "taskqueue_get", "taskqueue_cancel", "taskqueue_get"):
                    body = tool_call(tool, {"task_id": task_id}, i, meta=meta())
                    r = await c.post("/mcp", headers=modern_headers("tools/call", tool), json=body)
                    result = r.json().get("result", {})
                    if result.get("isError") is not False or result["structuredContent"]["task"]["id"] != task_id:
                        failures.append(f"{tool} {i}: {r.text}")
    assert failures == []


async def test_a_killed_node_loses_its_sessions_cleanly_and_serves_its_tasks_again_once_back(
        mesh3: Cluster) -> None:
    victim = mesh3.nodes[1]
    victim_tag = owner_tag(victim.peer_id)
    async with httpx.AsyncClient(base_url=mesh3.url, timeout=20) as c:
        with trio.fail_after(120):
            sessions: dict[str, list[dict[str, str]]] = {"victim": [], "others": []}
            tasks: dict[str, list[str]] = {"victim": [], "others": []}
            for _ in range(60):  # sessions and tasks on every node (bounded)
                r = await c.post("/mcp", headers=JSON_HEADERS, json=initialize("2025-11-25", client="raw"))
                h = legacy_headers(r.headers["mcp-session-id"], "2025-11-25")
                assert (await c.post("/mcp", headers=h, json=INITIALIZED)).status_code == 202
                which = "victim" if tag_of(h["mcp-session-id"]) == victim_tag else "others"
                sessions[which].append(h)
                body = tool_call("taskqueue_submit", {"task_type": "test.never", "payload": {}}, 1, meta=meta())
                r = await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_submit"), json=body)
                task_id = r.json()["result"]["structuredContent"]["task_id"]
                tasks["victim" if tag_of(task_id) == victim_tag else "others"].append(task_id)
                if min(len(v) for v in (*sessions.values(), *tasks.values())) >= 2:
                    break
            mesh3.kill(1)
            for h in sessions["victim"]:
                r = await c.post("/mcp", headers=h, json=tool_call("test_simple_text", {}, 7))
                assert r.status_code == 404 and r.json()["error"]["code"] == -32001, r.text
            r = await c.post("/mcp", headers=JSON_HEADERS, json=initialize("2025-11-25", client="raw"))
            assert r.status_code == 200 and tag_of(r.headers["mcp-session-id"]) != victim_tag
            for h in sessions["others"] * 3:
                r = await c.post("/mcp", headers=h, json=tool_call("test_simple_text", {}, 8))
                assert r.status_code == 200, r.text
            for task_id in tasks["others"] * 3:
                assert (await _get_task(c, task_id)).status_code == 200
            for task_id in tasks["victim"]:
                r = await _get_task(c, task_id)
                assert r.status_code == 503 and r.json()["error"]["code"] == -32011, r.text
                assert int(r.headers["retry-after"]) >= 1
            await trio.to_thread.run_sync(mesh3.restart, 1)
            for task_id in tasks["victim"] * 3:
                for _ in range(30):  # the other nodes dial it again (bounded: 3 s)
                    r = await _get_task(c, task_id)
                    if r.status_code == 200:
                        break
                    await trio.sleep(0.1)
                assert r.status_code == 200, r.text
                assert r.json()["result"]["structuredContent"]["task"]["id"] == task_id


async def _subscribe(client: Client, uri: str) -> None:
    """``resources/subscribe``, a legacy-era request (the SDK warns that the modern era dropped it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.subscribe_resource(uri)


async def _get_task(c: httpx.AsyncClient, task_id: str) -> httpx.Response:
    body = tool_call("taskqueue_get", {"task_id": task_id}, 5, meta=meta())
    return await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_get"), json=body)

