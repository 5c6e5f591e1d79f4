"""Many nodes, one MCP server: a request lands on any node and is served by the one holding its state.

Three servers with real libp2p nodes in one process; the client talks to a different node on
every request, as behind a round-robin load balancer (the end-to-end test with HAProxy is
``tests/test_balancer.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio

from harness.mcp_http import INITIALIZED, JSON_HEADERS, initialize, legacy_headers, modern_headers, tool_call
from tests import sseclient
from tests.helpers.auth import write_tokens
from tests.helpers.http import meta, open_session
from tests.helpers.mesh import RoundRobin, mesh
from tests.helpers.tasks import modern, poll_until, tasks_meta
from tests.toolkit import GATES, STARTED
from triomcp._owner import owner_tag, tag_of

NAMES = ["a", "b", "c"]

# About one run in six, closing three in-process hosts right after a relayed request leaves one
# libp2p TCP socket to the garbage collector (py-libp2p 0.8.1; a bare mesh does not, and 400 relays
# on one node leave the process's open descriptors unchanged and open one stream: measured). The
# warning is that teardown race's, so these tests let it pass; the relay's own streams are checked
# by the tests themselves.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


def _tags(apps: dict[str, Any]) -> dict[str, str]:
    return {n: owner_tag(app.state.services.node.peer_id) for n, (_, app) in apps.items()}


async def test_a_legacy_session_is_served_whichever_node_a_request_lands_on(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        urls = [url for url, _ in apps.values()]
        tags = _tags(apps)
        with trio.fail_after(30):
            async with httpx.AsyncClient() as c:
                r = await c.post(f"{urls[0]}/mcp", headers=JSON_HEADERS, json=initialize("2025-11-25", client="raw"))
                assert r.status_code == 200
                sid = r.headers["mcp-session-id"]
                assert tag_of(sid) == tags["a"]
                h = legacy_headers(sid, "2025-11-25")
                r = await c.post(f"{urls[1]}/mcp", headers=h, json=INITIALIZED)
                assert r.status_code == 202, r.text
                for i in range(9):
                    r = await c.post(f"{urls[i % 3]}/mcp", headers=h, json=tool_call("echo", {"text": f"t{i}"}, i + 2))
                    assert r.status_code == 200, r.text
                    assert f"t{i}" in r.text
                r = await c.post(f"{urls[1]}/mcp", headers={**h, "x-request-id": "relayed-1"},
                                 json=tool_call("echo", {"text": "id"}, 50))
                assert r.headers.get_list("x-request-id") == ["relayed-1"]  # one id, the same on both nodes
                r = await c.delete(f"{urls[2]}/mcp", headers=h)
                assert r.status_code in (200, 204), r.text
                r = await c.post(f"{urls[1]}/mcp", headers=h, json=tool_call("echo", {"text": "x"}, 99))
                assert r.status_code == 404
        relayed = [app.state.services.relay.statistics.relayed for _, app in apps.values()]
        assert relayed[0] == 0 and relayed[1] >= 4 and relayed[2] >= 3


async def test_a_task_is_read_back_by_its_id_through_any_node(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        urls = [url for url, _ in apps.values()]
        with trio.fail_after(30):
            async with httpx.AsyncClient() as c:
                body = tool_call("taskqueue_submit", {"task_type": "test.echo", "payload": {"x": 1}}, 1)
                r = await c.post(f"{urls[1]}/mcp", headers=modern_headers("tools/call", "taskqueue_submit"),
                                 json={**body, "params": {**body["params"], "_meta": meta()}})
                assert r.status_code == 200, r.text
                task_id = r.json()["result"]["structuredContent"]["task_id"]
                assert tag_of(task_id) == _tags(apps)["b"]
                for url in urls:  # the task's resource, too
                    body = {"jsonrpc": "2.0", "id": 3, "method": "resources/read",
                            "params": {"uri": f"triomcp://tasks/{task_id}", "_meta": meta()}}
                    r = await c.post(f"{url}/mcp", headers=modern_headers("resources/read",
                                                                          f"triomcp://tasks/{task_id}"), json=body)
                    assert r.status_code == 200 and task_id in r.json()["result"]["contents"][0]["text"], r.text
                for url in urls:
                    body = tool_call("taskqueue_get", {"task_id": task_id}, 2)
                    r = await c.post(f"{url}/mcp", headers=modern_headers("tools/call", "taskqueue_get"),
                                     json={**body, "params": {**body["params"], "_meta": meta()}})
                    assert r.status_code == 200, r.text
                    result = r.json()["result"]
                    assert result.get("isError") is not True, result
                    assert result["structuredContent"]["task"]["id"] == task_id


async def test_a_legacy_call_streams_through_another_node_and_resumes_through_a_third(tmp_path: Path) -> None:
    """SSE polling across nodes: the call's stream relayed from its owner through B; the resumption
    (GET with Last-Event-ID) through C gets the rest, the result included."""
    name = "relay-polled"
    STARTED[name], GATES[name] = trio.Event(), trio.Event()
    async with mesh(tmp_path, NAMES) as apps:
        urls = [url for url, _ in apps.values()]
        with trio.fail_after(20):
            async with httpx.AsyncClient(base_url=urls[0]) as c:
                h = await open_session(c)
            body = {"jsonrpc": "2.0", "id": 31, "method": "tools/call",
                    "params": {"name": "polled", "arguments": {"text": name}, "_meta": {"progressToken": "p"}}}
            async with sseclient.request(urls[1], "POST", "/mcp", h, body) as r:
                (priming,) = await r.read(1)
                assert priming["data"] is None
                assert await r.read_body() == b"" and r.ended
            await STARTED[name].wait()
            GATES[name].set()
            resume = {**h, "accept": "text/event-stream", "last-event-id": priming["id"]}
            async with sseclient.request(urls[2], "GET", "/mcp", resume) as r:
                assert r.status == 200
                rest = await r.read(2)
    assert rest[0]["data"]["method"] == "notifications/progress"
    assert rest[1]["data"]["id"] == 31 and rest[1]["data"]["result"]["structuredContent"]["text"] == name


async def test_a_get_stream_through_another_node_carries_the_sessions_notifications(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        (url_a, app_a), (url_b, _), _ = apps.values()
        with trio.fail_after(20):
            async with httpx.AsyncClient(base_url=url_a) as c:
                h = await open_session(c)
                r = await c.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",
                                                          "params": {"uri": "test://doc"}})
                assert r.status_code == 200, r.text
            async with sseclient.request(url_b, "GET", "/mcp", {**h, "accept": "text/event-stream"}) as stream:
                assert stream.status == 200
                for _ in range(100):  # until the relayed stream is attached on A (bounded: 1 s)
                    app_a.state.services.engine.notify_resource_updated("test://doc")
                    with trio.move_on_after(0.01):
                        (event,) = await stream.read(1)
                        break
                else:
                    raise AssertionError("no notification came through the relayed GET stream")
    assert event["data"]["method"] == "notifications/resources/updated"
    assert event["data"]["params"]["uri"] == "test://doc"


async def test_modern_tasks_and_input_rounds_are_served_by_their_owner_from_any_node(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        urls = [url for url, _ in apps.values()]
        rr = RoundRobin(urls)
        async with httpx.AsyncClient(base_url="http://mesh", transport=rr, timeout=20) as c:
            with trio.fail_after(30):
                created = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "rr1"}},
                                        name="job")).json()["result"]
                task_id = created["taskId"]
                assert tag_of(task_id) in _tags(apps).values()
                for _ in range(3):  # every node, whichever holds the task
                    got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()
                    assert got["result"]["status"] == "working", got
                GATES.setdefault("rr1", trio.Event()).set()
                done = await poll_until(c, task_id, {"completed", "failed", "cancelled"})
                assert done["status"] == "completed"
                assert done["result"]["structuredContent"] == {"ok": True, "text": "done rr1"}
                task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "rr2"}},
                                        name="job")).json()["result"]["taskId"]
                await STARTED.setdefault("rr2", trio.Event()).wait()
                ack = (await modern(c, "tasks/cancel", {"taskId": task_id}, name=task_id)).json()
                assert ack["result"]["resultType"] == "complete", ack
                assert (await poll_until(c, task_id, {"cancelled", "completed", "failed"}))["status"] == "cancelled"
                # An input-required round: the requestState names the node that asked.
                caps = {"elicitation": {}}
                first = await _modern_call(c, "confirm", {"text": "sure?"}, caps)
                assert first["resultType"] == "input_required", first
                assert tag_of(first["requestState"]) in _tags(apps).values()
                (key,) = first["inputRequests"]
                answer = {key: {"action": "accept", "content": {"confirm": True}}}
                second = await _modern_call(c, "confirm", {"text": "sure?"}, caps,
                                            inputResponses=answer, requestState=first["requestState"])
                assert second.get("resultType", "complete") == "complete" and second["isError"] is False, second


async def test_an_unreachable_owner_is_a_clear_answer_at_once(tmp_path: Path) -> None:
    gone = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
    async with mesh(tmp_path, NAMES) as apps:
        (url_a, app_a), _, _ = apps.values()
        app_a.state.services.node.authorized.authorize(gone, "gone")
        tag = owner_tag(gone)
        async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
            with trio.fail_after(20):
                r = await c.post("/mcp", headers=legacy_headers(f"{tag}.abcdef", "2025-11-25"),
                                 json=tool_call("echo", {"text": "x"}, 1))
                assert r.status_code == 404 and r.json()["error"]["code"] == -32001, r.text
                assert "cannot be reached" in r.json()["error"]["message"]
                for _ in range(2):  # the second answer comes from the down-cache, without a dial
                    r = await modern(c, "tasks/get", {"taskId": f"{tag}.0123"}, name=f"{tag}.0123")
                    assert r.status_code == 503 and r.headers["retry-after"] == "1"
                    error = r.json()["error"]
                    assert error["code"] == -32011 and error["data"]["owner"] == gone, error
                    assert error["data"]["retryable"] is True
                # An id with an unknown tag is served here: and not found.
                r = await c.post("/mcp", headers=legacy_headers("zzzzzzzz.abcdef", "2025-11-25"),
                                 json=tool_call("echo", {"text": "x"}, 1))
                assert r.status_code == 404


async def test_a_client_that_leaves_cancels_the_relayed_call_on_the_owner(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        (url_a, app_a), (url_b, _), _ = apps.values()
        async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
            body = tool_call("taskqueue_submit", {"task_type": "test.never", "payload": {}}, 1, meta=meta())
            r = await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_submit"), json=body)
            task_id = r.json()["result"]["structuredContent"]["task_id"]
        admission_a = app_a.state.services.admission
        body = tool_call("taskqueue_wait", {"task_id": task_id, "timeout_s": 600}, 2, meta=meta())
        with trio.fail_after(20):
            async with await _send_only(url_b, modern_headers("tools/call", "taskqueue_wait"), body):
                for _ in range(200):  # until the wait runs on A, the owner (bounded: 2 s)
                    if admission_a.in_flight == 1:
                        break
                    await trio.sleep(0.01)
                assert admission_a.in_flight == 1
            for _ in range(200):  # the client left: the call on A ends (bounded: 2 s)
                if admission_a.in_flight == 0:
                    break
                await trio.sleep(0.01)
            assert admission_a.in_flight == 0


async def _modern_call(c: httpx.AsyncClient, tool: str, arguments: dict[str, Any], caps: dict[str, Any],
                       **params: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, **params,
                       "_meta": meta(**{"io.modelcontextprotocol/clientCapabilities": caps})}}
    r = await c.post("/mcp", headers={**modern_headers("tools/call", tool), "accept": "application/json"}, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


async def _send_only(url: str, headers: dict[str, str], body: dict[str, Any]) -> trio.SocketStream:
    """A TCP connection that has sent one POST to ``/mcp`` and reads nothing (closing it is leaving)."""
    conn = h11.Connection(h11.CLIENT)
    raw = json.dumps(body).encode()
    parts = httpx.URL(url)
    head = [("host", f"{parts.host}:{parts.port}"), ("content-length", str(len(raw))), *headers.items()]
    stream = await trio.open_tcp_stream(parts.host, parts.port)
    await stream.send_all(conn.send(h11.Request(method="POST", target="/mcp", headers=head)) + conn.send(h11.Data(data=raw)))
    return stream


async def test_a_listen_stream_on_one_node_carries_the_status_of_tasks_held_by_others(tmp_path: Path) -> None:
    async with mesh(tmp_path, NAMES) as apps:
        urls = [url for url, _ in apps.values()]
        tags = _tags(apps)
        with trio.fail_after(30):
            task_ids = {}
            for name, url in zip(NAMES, urls, strict=True):  # one task held by each node
                async with httpx.AsyncClient(base_url=url, timeout=20) as c:
                    created = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": f"ls-{name}"}},
                                            name="job")).json()["result"]
                    assert tag_of(created["taskId"]) == tags[name]
                    task_ids[name] = created["taskId"]
            listen = {"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                      "params": {"notifications": {"taskIds": list(task_ids.values())}, "_meta": tasks_meta()}}
            async with sseclient.request(urls[2], "POST", "/mcp", modern_headers("subscriptions/listen"),
                                         listen) as stream:
                acked = (await stream.read(1))[0]["data"]
                assert acked["params"]["notifications"]["taskIds"] == list(task_ids.values())
                engines = [app.state.services.engine for _, app in list(apps.values())[:2]]
                for _ in range(300):  # until C watches A's and B's tasks there (bounded: 3 s)
                    if all(engine.statistics().listeners == 1 for engine in engines):
                        break
                    await trio.sleep(0.01)
                assert all(engine.statistics().listeners == 1 for engine in engines)
                for name in NAMES:
                    GATES.setdefault(f"ls-{name}", trio.Event()).set()
                done: set[str] = set()
                while done != set(task_ids.values()):
                    note = (await stream.read(1))[0]["data"]
                    if note["method"] == "notifications/tasks" and note["params"]["status"] == "completed":
                        done.add(note["params"]["taskId"])
            for _ in range(300):  # the client left: the watches on A and B end too (bounded: 3 s)
                if all(engine.statistics().listeners == 0 for engine in engines):
                    break
                await trio.sleep(0.01)
            assert all(engine.statistics().listeners == 0 for engine in engines)


async def test_the_owner_authenticates_a_relayed_request_itself(tmp_path: Path) -> None:
    """With authorization on (the same tokens on every node), a session stays bound to its principal
    through any node: the owner checks the client's own token, never the relaying node's word."""
    tokens = {"alice": ("alice", "triomcp:admin"), "bob": ("bob", "triomcp:admin")}
    for name in NAMES:
        write_tokens(tmp_path / name / "data" / "tokens", tokens)
    async with mesh(tmp_path, NAMES, auth={"tokens_file": "tokens"}) as apps:
        urls = [url for url, _ in apps.values()]
        alice, bob = {"authorization": "Bearer alice"}, {"authorization": "Bearer bob"}
        with trio.fail_after(20):
            async with httpx.AsyncClient(base_url=urls[0], headers=alice) as c:
                h = await open_session(c)
            async with httpx.AsyncClient() as c:
                for url in urls[1:]:
                    r = await c.post(f"{url}/mcp", headers={**h, **alice}, json=tool_call("whoami", {}, 2))
                    assert r.status_code == 200 and "alice" in r.text, r.text
                    r = await c.post(f"{url}/mcp", headers={**h, **bob}, json=tool_call("whoami", {}, 3))
                    assert r.status_code == 404, r.text  # bob's token: not his session, on any node
                    r = await c.post(f"{url}/mcp", headers=h, json=tool_call("whoami", {}, 4))
                    assert r.status_code == 401, r.text  # no token: refused where it lands
