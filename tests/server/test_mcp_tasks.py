"""MCP tasks in both eras, backed by the durable queue: one node, two nodes, a restart, principals.

The official SDK client has no tasks support, so these speak raw HTTP (httpx) to real Hypercorn.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.applications import Starlette

from tests import sseclient
from tests.conftest import make_settings, run_app
from tests.helpers.auth import write_tokens
from tests.helpers.http import JSON_HEADERS, meta, modern_headers, open_session
from tests.helpers.mesh import mesh, mesh_settings, tool_calls
from tests.helpers.tasks import RELATED, TASKS_EXT, Legacy, modern, poll_until, tasks_meta, waiting_for_finish
from tests.toolkit import CANCELLED, CANCELLED_EVENTS, GATES, STARTED, register_test_tools
from triomcp.conformance import tasks as conformance_tasks
from triomcp.mcp.registry import Registry
from triomcp.server.app import create_app
from triomcp.server.mcp_tasks import MCP_TOOL_CALL


@contextlib.asynccontextmanager
async def one_node(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(make_settings(tmp_path, taskqueue={"enabled": True, "lease_seconds": 2.0}, **overrides),
                     configure=register_test_tools)
    async with run_app(app) as url:
        yield url, app


async def test_legacy_task_lifecycle(tmp_path: Path) -> None:
    async with one_node(tmp_path) as (url, app), httpx.AsyncClient(base_url=url, timeout=20) as c:
        with trio.fail_after(30):
            r = await c.post("/mcp", headers=JSON_HEADERS, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                             "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                        "clientInfo": {"name": "raw", "version": "1"}}})
            caps = r.json()["result"]["capabilities"]
            assert caps["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
            s = Legacy(c, await open_session(c))
            tools = {t["name"]: t for t in (await s.rpc("tools/list", {}))["result"]["tools"]}
            assert tools["gate"]["execution"] == {"taskSupport": "optional"}
            assert tools["job"]["execution"] == {"taskSupport": "required"}
            assert "execution" not in tools["echo"]

            created = await s.rpc("tools/call", {"name": "gate", "arguments": {"text": "lt1"}, "task": {"ttl": 60_000}})
            task = created["result"]["task"]
            assert task["status"] == "working" and task["ttl"] == 60_000 and task["pollInterval"] > 0
            task_id = task["taskId"]
            # Durable before it was acknowledged: it is in the queue's database now.
            stored = await app.state.services.queue.get(task_id)
            assert stored.type == MCP_TOOL_CALL and stored.payload == {"tool": "gate", "arguments": {"text": "lt1"}}
            await STARTED.setdefault("lt1", trio.Event()).wait()
            got = (await s.rpc("tasks/get", {"taskId": task_id}))["result"]
            assert got["status"] == "working" and got["statusMessage"] == "before the gate"
            listed = (await s.rpc("tasks/list", {}))["result"]["tasks"]
            assert [t["taskId"] for t in listed] == [task_id]

            # tasks/result on a working task blocks until it is done: the server is waiting for the task
            # (and the task is still working) before the gate opens; its answer is the final result.
            queue = app.state.services.queue
            waiting = waiting_for_finish(queue, task_id)
            result: dict[str, Any] = {}

            async def wait_result() -> None:
                result.update((await s.rpc("tasks/result", {"taskId": task_id}))["result"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_result)
                await waiting.wait()
                assert not result and not (await queue.get(task_id)).finished
                GATES.setdefault("lt1", trio.Event()).set()
            assert result["structuredContent"] == {"ok": True, "text": "lt1"}
            assert result["_meta"][RELATED] == {"taskId": task_id}
            assert (await s.rpc("tasks/get", {"taskId": task_id}))["result"]["status"] == "completed"
            again = await s.rpc("tasks/cancel", {"taskId": task_id})
            assert again["error"]["code"] == -32602 and "terminal" in again["error"]["message"]

            # A tool error is a completed task whose result says isError.
            failed = (await s.rpc("tools/call", {"name": "fail", "arguments": {"text": "x"}, "task": {}}))["result"]
            done = (await s.rpc("tasks/result", {"taskId": failed["task"]["taskId"]}))["result"]
            assert done["isError"] is True and done["structuredContent"]["error"]["code"] == "on_purpose"

            # taskSupport is enforced both ways; unknown task ids are -32602.
            forbidden = await s.rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}, "task": {}})
            assert forbidden["error"]["code"] == -32601
            required = await s.rpc("tools/call", {"name": "job", "arguments": {"text": "x"}})
            assert required["error"]["code"] == -32601
            unknown = await s.rpc("tasks/get", {"taskId": "0" * 32})
            assert unknown["error"]["code"] == -32602


async def test_legacy_cancel_reaches_the_handler_and_status_is_notified(tmp_path: Path) -> None:
    async with one_node(tmp_path) as (url, _app), httpx.AsyncClient(base_url=url, timeout=20) as c:
        with trio.fail_after(30):
            headers = await open_session(c)
            s = Legacy(c, headers)
            async with sseclient.request(url, "GET", "/mcp", {**headers, "accept": "text/event-stream"}) as stream:
                task_id = (await s.rpc("tools/call", {"name": "block", "arguments": {"text": "lc1"},
                                                      "task": {"ttl": 5000}}))["result"]["task"]["taskId"]
                await STARTED.setdefault("lc1", trio.Event()).wait()
                cancelled = (await s.rpc("tasks/cancel", {"taskId": task_id}))["result"]
                assert cancelled["status"] == "cancelled"
                assert "lc1" in CANCELLED
                notes: list[dict[str, Any]] = []
                while not any(n["params"]["status"] == "cancelled" for n in notes):
                    events = await stream.read(1)
                    notes += [e["data"] for e in events if e["data"]["method"] == "notifications/tasks/status"]
            assert all(n["params"]["taskId"] == task_id for n in notes)
            result = await s.rpc("tasks/result", {"taskId": task_id})
            assert result["error"]["code"] == -32602 and "cancelled" in result["error"]["message"]


async def test_modern_task_extension(tmp_path: Path) -> None:
    async with one_node(tmp_path) as (url, _app), httpx.AsyncClient(base_url=url, timeout=20) as c:
        with trio.fail_after(30):
            discover = (await modern(c, "server/discover", {})).json()["result"]
            assert discover["capabilities"]["extensions"] == {TASKS_EXT: {}}
            # A required-task tool, asked by a client that did not declare the extension.
            r = await modern(c, "tools/call", {"name": "job", "arguments": {"text": "m1"}}, name="job", with_ext=False)
            assert r.status_code == 400 and r.json()["error"]["code"] == -32021
            assert r.json()["error"]["data"]["requiredCapabilities"] == {"extensions": {TASKS_EXT: {}}}
            r = await modern(c, "tools/call", {"name": "job", "arguments": {"text": "m1"}}, name="job")
            created = r.json()["result"]
            assert created["resultType"] == "task" and created["status"] == "working"
            assert created["ttlMs"] > 0 and created["pollIntervalMs"] > 0
            task_id = created["taskId"]
            # tasks/* route on Mcp-Name = taskId.
            bad = await modern(c, "tasks/get", {"taskId": task_id}, name="wrong")
            assert bad.status_code == 400 and bad.json()["error"]["code"] == -32020
            got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()["result"]
            assert got["resultType"] == "complete" and got["status"] == "working" and "result" not in got
            ack = (await modern(c, "tasks/update", {"taskId": task_id, "inputResponses": {}}, name=task_id)).json()
            assert ack["result"]["resultType"] == "complete"
            listen = {"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                      "params": {"notifications": {"taskIds": [task_id]}, "_meta": tasks_meta()}}
            async with sseclient.request(url, "POST", "/mcp", modern_headers("subscriptions/listen"), listen) as st:
                acked = (await st.read(1))[0]["data"]
                assert acked["params"]["notifications"]["taskIds"] == [task_id]
                GATES.setdefault("m1", trio.Event()).set()
                while True:
                    note = (await st.read(1))[0]["data"]
                    if note["method"] == "notifications/tasks" and note["params"]["status"] == "completed":
                        break
            assert note["params"]["result"]["structuredContent"] == {"ok": True, "text": "done m1"}
            got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()["result"]
            assert got["status"] == "completed" and got["result"]["isError"] is False

            # Cancel: acknowledged, and the handler stops.
            task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "m2"}},
                                    name="job")).json()["result"]["taskId"]
            await STARTED.setdefault("m2", trio.Event()).wait()
            ack = (await modern(c, "tasks/cancel", {"taskId": task_id}, name=task_id)).json()["result"]
            assert ack["resultType"] == "complete" and set(ack) == {"resultType", "_meta"}
            await CANCELLED_EVENTS.setdefault("m2", trio.Event()).wait()
            # The ack is eventually consistent: poll as a client does (pollIntervalMs) until the worker
            # has recorded the handler's stop.
            got = await poll_until(c, task_id, {"cancelled", "completed", "failed"})
            assert got["status"] == "cancelled"
            missing = await modern(c, "tasks/get", {"taskId": "nope"}, name="nope")
            assert missing.json()["error"]["code"] == -32602
            # A tool that may run as a task: answered directly to a client without the extension, and
            # as a task to one that declared it (the server decides; a tool error is a completed task).
            plain = (await modern(c, "tools/call", {"name": "fail", "arguments": {"text": "m4"}}, name="fail",
                                  with_ext=False)).json()
            assert plain["result"]["resultType"] == "complete" and plain["result"]["isError"] is True
            task = (await modern(c, "tools/call", {"name": "fail", "arguments": {"text": "m5"}}, name="fail")).json()
            assert task["result"]["resultType"] == "task"
            done = await poll_until(c, task["result"]["taskId"], {"completed", "failed", "cancelled"})
            assert done["status"] == "completed" and done["result"]["isError"] is True
            assert done["result"]["resultType"] == "complete"


async def test_tasks_are_bound_to_their_principal(tmp_path: Path) -> None:
    write_tokens(tmp_path / "data" / "tokens", {"alice": ("alice", "triomcp:admin"), "bob": ("bob", "triomcp:admin")})
    async with one_node(tmp_path, auth={"tokens_file": "tokens"}) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            alice = {"authorization": "Bearer alice"}
            bob = {"authorization": "Bearer bob"}
            task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "p1"}}, name="job",
                                    headers=alice)).json()["result"]["taskId"]
            for method in ("tasks/get", "tasks/cancel", "tasks/update"):
                params = {"taskId": task_id, **({"inputResponses": {}} if method == "tasks/update" else {})}
                refused = (await modern(c, method, params, name=task_id, headers=bob)).json()
                assert refused["error"]["code"] == -32602 and "not found" in refused["error"]["message"]
        async with httpx.AsyncClient(base_url=url, timeout=20, headers=bob) as bob_client:
            bob_session = Legacy(bob_client, await open_session(bob_client))
            assert (await bob_session.rpc("tasks/list", {}))["result"]["tasks"] == []
            refused = await bob_session.rpc("tasks/result", {"taskId": task_id})
            assert refused["error"]["code"] == -32602
        async with httpx.AsyncClient(base_url=url, timeout=20, headers=alice) as alice_client:
            alice_session = Legacy(alice_client, await open_session(alice_client))
            mine = (await alice_session.rpc("tasks/list", {}))["result"]["tasks"]
            assert [t["taskId"] for t in mine] == [task_id]
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id, headers=alice)).json()
            assert got["result"]["status"] == "working"  # nothing bob did changed it
            GATES.setdefault("p1", trio.Event()).set()


async def test_a_task_created_on_a_runs_on_b_and_survives_the_client_leaving(tmp_path: Path) -> None:
    # A runs no mcp.tool_call workers of its own: only B's mesh workers can take the task.
    a_settings = {"taskqueue": {"concurrency": {"*": 2, MCP_TOOL_CALL: 0}}}
    async with mesh(tmp_path, ["a", "b"], per_node={"a": a_settings}) as nodes:
        url_a, app_a = nodes["a"]
        b_id = nodes["b"][1].state.services.node.peer_id
        with trio.fail_after(40):
            async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
                task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "ab1"}},
                                        name="job")).json()["result"]["taskId"]
            # The client is gone; the work goes on on B.
            await STARTED.setdefault("ab1", trio.Event()).wait()
            running = await app_a.state.services.queue.get(task_id)
            assert running.lease_holder == f"peer:{b_id}/{b_id}"  # B, claiming from A
            GATES.setdefault("ab1", trio.Event()).set()
            await app_a.state.services.queue.wait_finished(task_id)
            async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:  # a new client, later
                got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()["result"]
            assert got["status"] == "completed"
            assert got["result"]["structuredContent"] == {"ok": True, "text": "done ab1"}

            # Cancel from A reaches the handler running on B.
            async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
                task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "ab2"}},
                                        name="job")).json()["result"]["taskId"]
                await STARTED.setdefault("ab2", trio.Event()).wait()
                await modern(c, "tasks/cancel", {"taskId": task_id}, name=task_id)
                await CANCELLED_EVENTS.setdefault("ab2", trio.Event()).wait()
                final = await app_a.state.services.queue.wait_finished(task_id)
                assert final.state.value == "cancelled"


async def test_the_result_survives_a_restart_of_the_owning_node(tmp_path: Path) -> None:
    settings_a = mesh_settings(tmp_path, "a", taskqueue={"concurrency": {"*": 2, MCP_TOOL_CALL: 0}})
    app_b = create_app(mesh_settings(tmp_path, "b"), configure=register_test_tools)
    with trio.fail_after(60):
        async with run_app(app_b):
            node_b = app_b.state.services.node

            async def start_a() -> tuple[contextlib.AbstractAsyncContextManager[str], Starlette]:
                app = create_app(settings_a, configure=register_test_tools)
                return run_app(app), app

            cm, app_a = await start_a()
            async with cm as url_a:
                node_a = app_a.state.services.node
                node_a.authorized.authorize(node_b.peer_id, "b")
                node_b.authorized.authorize(node_a.peer_id, "a")
                await node_b.connect(node_a.listen_addrs()[0])
                async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
                    task_id = (await modern(c, "tools/call", {"name": "job", "arguments": {"text": "rs1"}},
                                            name="job")).json()["result"]["taskId"]
                await STARTED.setdefault("rs1", trio.Event()).wait()
            # A is down with the task leased to B. Let the job finish while A is away.
            GATES.setdefault("rs1", trio.Event()).set()
            cm, app_a = await start_a()  # same data dir: same identity, same queue
            async with cm as url_a:
                await app_a.state.services.node.connect(node_b.listen_addrs()[0])
                async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
                    while True:
                        # The version first: a change between the two reads then ends the wait at once.
                        seen = (await app_a.state.services.queue.get(task_id)).version
                        got = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()["result"]
                        if got["status"] != "working":
                            break
                        await app_a.state.services.queue.wait_changed(task_id, seen)
                assert got["status"] == "completed", got
                assert got["result"]["structuredContent"] == {"ok": True, "text": "done rs1"}


def with_task_fixtures(registry: Registry) -> None:
    register_test_tools(registry)
    conformance_tasks.register(registry)


async def elicit_call(c: httpx.AsyncClient, method: str, params: dict[str, Any], *, name: str) -> dict[str, Any]:
    """A modern request from a client that declares the tasks extension and elicitation."""
    caps = {"elicitation": {}, "extensions": {TASKS_EXT: {}}}
    body = {"jsonrpc": "2.0", "id": 1, "method": method,
            "params": {**params, "_meta": meta(**{"io.modelcontextprotocol/clientCapabilities": caps})}}
    r = await c.post("/mcp", headers={**modern_headers(method, name), "accept": "application/json"}, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


async def test_a_task_asks_its_client_for_input_from_a_remote_worker(tmp_path: Path) -> None:
    """input_required inside a task run by B's mesh worker, answered on A with tasks/update (partially,
    then fully); and a call that gathers input over MRTR on A before it becomes a task."""
    a_settings = {"taskqueue": {"concurrency": {"*": 2, MCP_TOOL_CALL: 0}}}
    async with mesh(tmp_path, ["a", "b"], per_node={"a": a_settings}, configure=with_task_fixtures) as nodes:
        (url_a, app_a), (_url_b, app_b) = nodes["a"], nodes["b"]
        with trio.fail_after(40):
            async with httpx.AsyncClient(base_url=url_a, timeout=20) as c:
                created = await elicit_call(c, "tools/call", {"name": "multi_input", "arguments": {}},
                                            name="multi_input")
                task_id = created["taskId"]
                parked = await poll_until(c, task_id, {"input_required", "completed", "failed", "cancelled"})
                assert parked["status"] == "input_required" and set(parked["inputRequests"]) == {"first", "second"}
                assert all(r["method"] == "elicitation/create" for r in parked["inputRequests"].values())
                answer = {"action": "accept", "content": {"name": "one"}}
                ack = await elicit_call(c, "tasks/update", {"taskId": task_id, "inputResponses": {"first": answer}},
                                        name=task_id)
                assert ack["resultType"] == "complete" and "taskId" not in ack
                still = await elicit_call(c, "tasks/get", {"taskId": task_id}, name=task_id)
                assert still["status"] == "input_required" and list(still["inputRequests"]) == ["second"]
                await elicit_call(c, "tasks/update", {"taskId": task_id, "inputResponses": {
                    "second": {"action": "accept", "content": {"name": "two"}}, "never-asked": answer}}, name=task_id)
                done = await poll_until(c, task_id, {"completed", "failed", "cancelled"})
                assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "got one and two"
                assert done["result"]["resultType"] == "complete" and "inputRequests" not in done
                # Both runs (the one that asked, and the one with the answers) were B's.
                assert tool_calls(app_b, "multi_input") == 2 and tool_calls(app_a, "multi_input") == 0

                # MRTR, then a task: round 1 asks on A, round 2 becomes a task that sees the answer.
                r1 = await elicit_call(c, "tools/call", {"name": "test_tool_with_task", "arguments": {}},
                                       name="test_tool_with_task")
                assert r1["resultType"] == "input_required" and "taskId" not in r1
                r2 = await elicit_call(c, "tools/call", {
                    "name": "test_tool_with_task", "arguments": {}, "requestState": r1["requestState"],
                    "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Alice"}}}},
                    name="test_tool_with_task")
                assert r2["resultType"] == "task" and "requestState" not in r2 and "inputRequests" not in r2
                final = await poll_until(c, r2["taskId"], {"completed", "failed", "cancelled"})
                assert final["result"]["content"][0]["text"] == "Hello, Alice! (from a task)"
                # A built-in tool as a task: p2p_call_tool, run by B, calling A's echo over libp2p.
                a_id = app_a.state.services.node.peer_id
                call = await elicit_call(c, "tools/call", {"name": "p2p_call_tool", "arguments": {
                    "peer": a_id, "tool": "echo", "arguments": {"text": "via a task"}}}, name="p2p_call_tool")
                assert call["resultType"] == "task"
                echoed = await poll_until(c, call["taskId"], {"completed", "failed", "cancelled"})
                assert echoed["status"] == "completed" and echoed["result"]["isError"] is False
                assert "via a task" in echoed["result"]["content"][0]["text"]
                assert tool_calls(app_b, "p2p_call_tool") == 1
            stored = await app_a.state.services.queue.get(r2["taskId"])
            assert stored.payload["responses"] == {"user_name": {"action": "accept", "content": {"name": "Alice"}}}
