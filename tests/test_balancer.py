"""Many nodes, one MCP server, end to end: three ``triomcp serve`` processes in one mesh behind a real
load balancer (round-robin, no stickiness), HAProxy and nginx in turn (nginx with the shipped
``deploy/nginx.conf``), and the official MCP Python SDK client through it in every mode.

Every request of a session, stream or task may land on any node; the node holding it serves it over
the mesh (``triomcp.server.relay``). Each test counts failures and asserts there are none. Closed
sessions end on their nodes, wherever their DELETE lands; a client's task tools find its tasks on
every node, inside a legacy session too. The last test kills a node: its sessions end cleanly (404,
then a new session works), the others go on, and its durable tasks are readable again once it is
back. They need ``haproxy`` and ``nginx`` (``make haproxy nginx``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import mcp_types as types
import pytest
import trio
from mcp.client import Client

from harness.balancer import BALANCERS, Cluster, cluster
from harness.mcp_http import INITIALIZED, JSON_HEADERS, initialize, legacy_headers, modern_headers, tool_call
from tests.helpers.balanced import metric as _metric
from tests.helpers.balanced import never_task as _never_task
from tests.helpers.balanced import subscribe as _subscribe
from tests.helpers.http import meta
from tests.helpers.tasks import modern, poll_until
from triomcp._owner import owner_tag, tag_of

pytestmark = pytest.mark.slow

MODES = ["legacy", "2026-07-28", "auto"]
SESSIONS = 4
CALLS = 12


@pytest.fixture(scope="module", params=BALANCERS)
def mesh3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kind = str(request.param)
    with cluster(tmp_path_factory.mktemp(f"balanced-{kind}"), 3, settings={"mcp": {"conformance_fixtures": True}},
                 kind=kind) as c:
        yield c


def _waits(c: Cluster) -> list[str]:
    """Every live node's ``taskqueue_wait`` calls by outcome and era (what a failed count is read against)."""
    return [f"{node.url}: {line}" for node in c.nodes if node.alive
            for line in httpx.get(f"{node.url}/metrics", timeout=5).text.splitlines()
            if line.startswith("triomcp_mcp_tool_calls_total{") and 'tool="taskqueue_wait"' in line]


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
    waits_left = SESSIONS
    waits_cancelled, waits_ended = trio.Event(), trio.Event()
    counted: list[float] = []

    async def one_session(i: int) -> None:
        nonlocal waits_left
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
            waits_left -= 1
            if not waits_left:
                waits_cancelled.set()
            # The task is cancelled only once every wait has ended where it ran: a wait that had not
            # yet heard that its client left would end "ok", seeing its task end.
            await waits_ended.wait()
            again = await client.call_tool("taskqueue_cancel", {"task_id": task_id})
            if again.is_error or again.structured_content["task"]["state"] != "cancelled":  # type: ignore[index]
                failures.append(f"session {i} after the cancel: {again}")

    async def count_cancelled_waits() -> None:
        await waits_cancelled.wait()
        for _ in range(50):  # every cancelled wait ended on the node that ran it (bounded: 5 s)
            counted[:] = [_metric(mesh3, "triomcp_mcp_tool_calls_total", tool="taskqueue_wait", outcome="cancelled")
                          - cancelled_before]
            if counted[0] >= SESSIONS:
                break
            await trio.sleep(0.1)
        waits_ended.set()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_cancelled_waits)
            for i in range(SESSIONS):
                nursery.start_soon(one_session, i)
    assert failures == []
    assert len(asked) == SESSIONS
    assert progress.count(100) == SESSIONS
    assert counted == [SESSIONS], _waits(mesh3)


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


async def test_closed_sessions_end_on_their_nodes_wherever_their_delete_lands(mesh3: Cluster) -> None:
    before = _metric(mesh3, "triomcp_mcp_sessions_open")
    deletes = _metric(mesh3, "triomcp_http_requests_total", method="DELETE")
    failures: list[str] = []

    async def one_session(i: int) -> None:
        async with Client(f"{mesh3.url}/mcp", mode="legacy") as client:
            for n in range(CALLS):
                if (await client.call_tool("test_simple_text", {})).is_error:
                    failures.append(f"session {i} call {n}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(2 * SESSIONS):
                nursery.start_soon(one_session, i)
        for _ in range(50):  # each client's DELETE, relayed to its session's node (bounded: 5 s)
            if _metric(mesh3, "triomcp_mcp_sessions_open") <= before:
                break
            await trio.sleep(0.1)
    assert failures == []
    assert _metric(mesh3, "triomcp_mcp_sessions_open") <= before
    # each DELETE answered where it landed, and (on another node) once more where it ran
    assert _metric(mesh3, "triomcp_http_requests_total", method="DELETE") - deletes >= 2 * SESSIONS


async def test_a_clients_task_tools_find_its_tasks_on_every_node_inside_a_legacy_session_too(
        mesh3: Cluster) -> None:
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=mesh3.url, timeout=20) as c:
        with trio.fail_after(90):
            submitted = []
            for i in range(6):  # tasks on every node (round robin)
                body = tool_call("taskqueue_submit", {"task_type": "test.never", "payload": {"i": i}}, i, meta=meta())
                r = await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_submit"), json=body)
                submitted.append(r.json()["result"]["structuredContent"]["task_id"])
            assert {tag_of(t) for t in submitted} == {owner_tag(n.peer_id) for n in mesh3.nodes}
            async with Client(f"{mesh3.url}/mcp", mode="legacy") as client:  # its node holds a third of them
                for task_id in submitted:
                    for tool, arguments in (("taskqueue_get", {}), ("taskqueue_wait", {"timeout_s": 0.2}),
                                            ("taskqueue_cancel", {}), ("taskqueue_get", {})):
                        result = await client.call_tool(tool, {"task_id": task_id, **arguments})
                        if result.is_error or result.structured_content["task"]["id"] != task_id:  # type: ignore[index]
                            failures.append(f"{tool} {task_id}: {result}")
                    if result.structured_content["task"]["state"] != "cancelled":  # type: ignore[index]
                        failures.append(f"not cancelled: {result}")
                listed = await _listed(client)
            missing = set(submitted) - {t["id"] for t in listed}
            if missing:
                failures.append(f"not listed: {missing}")
            through_modern = await _listed_modern(c)
            if set(submitted) - {t["id"] for t in through_modern}:
                failures.append("not listed by a modern call")
    assert failures == []


async def _listed(client: Client) -> list[dict[str, Any]]:
    """Every task ``taskqueue_list`` pages through (bounded: 50 pages), with no node left out."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        out = (await client.call_tool("taskqueue_list", {"limit": 50, **({"cursor": cursor} if cursor else {})}))
        assert out.is_error is False and out.structured_content is not None, out
        assert out.structured_content["partial"] is False, out
        tasks += out.structured_content["tasks"]
        cursor = out.structured_content["next_cursor"]
        if cursor is None:
            return tasks
    raise AssertionError("the listing did not end within 50 pages")


async def _listed_modern(c: httpx.AsyncClient) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    cursor = None
    for i in range(50):  # bounded: 50 pages
        body = tool_call("taskqueue_list", {"limit": 50, **({"cursor": cursor} if cursor else {})}, i, meta=meta())
        out = (await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_list"), json=body)).json()
        page = out["result"]["structuredContent"]
        assert page["partial"] is False, page
        tasks += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks
    raise AssertionError("the listing did not end within 50 pages")


async def test_a_killed_node_loses_its_sessions_cleanly_and_serves_its_tasks_again_once_back(
        mesh3: Cluster) -> None:
    victim = mesh3.nodes[1]
    victim_tag = owner_tag(victim.peer_id)
    async with httpx.AsyncClient(base_url=mesh3.url, timeout=20) as c:
        with trio.fail_after(120):
            sessions: dict[str, list[dict[str, str]]] = {"victim": [], "others": []}
            tasks: dict[str, list[str]] = {"victim": [], "others": []}
            for _ in range(60):  # sessions and tasks on every node (bounded)
                # Four requests a round: under strict round robin over three nodes, three would put
                # every initialize on one node and every submit on another.
                assert (await c.get("/healthz")).status_code == 200
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
            assert min(len(v) for v in (*sessions.values(), *tasks.values())) >= 2, (sessions, tasks)
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


async def _get_task(c: httpx.AsyncClient, task_id: str) -> httpx.Response:
    body = tool_call("taskqueue_get", {"task_id": task_id}, 5, meta=meta())
    return await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_get"), json=body)

