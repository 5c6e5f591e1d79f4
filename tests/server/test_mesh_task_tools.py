"""The task tools over the mesh, for HTTP clients: each task read back where it lives, as its submitter.

Three servers with real libp2p nodes in one process, authorization on (the same tokens on every
node): ``taskqueue_list`` without ``peer`` lists the caller's tasks on every node, paginated with
one cursor, and marks a node that does not answer; inside a legacy session, ``taskqueue_get``,
``_wait``, ``_cancel`` (and ``resources/read`` of the task) for a task a third node holds are
served by that node for the client's own principal (never the session node's), and a cancelled
wait stops there. The end-to-end tests
behind HAProxy and nginx are ``tests/test_balancer_mesh_tasks.py``. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from harness.mcp_http import modern_headers, tool_call
from tests.helpers.auth import write_tokens
from tests.helpers.http import meta, open_session
from tests.helpers.mesh import mesh
from triomcp._owner import owner_tag, tag_of

NAMES = ["a", "b", "c"]
ALICE, BOB = {"authorization": "Bearer alice"}, {"authorization": "Bearer bob"}

# The teardown race of three in-process hosts (tests/server/test_relay.py says which): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


def _tokens(tmp_path: Path) -> None:
    tokens = {"alice": ("alice", "triomcp:admin"), "bob": ("bob", "triomcp:admin")}
    for name in NAMES:
        write_tokens(tmp_path / name / "data" / "tokens", tokens)


async def _modern(c: httpx.AsyncClient, url: str, who: dict[str, str], tool: str, arguments: dict[str, Any]
                  ) -> dict[str, Any]:
    """A modern ``tools/call`` on the node at ``url``: its result."""
    r = await c.post(f"{url}/mcp", headers={**modern_headers("tools/call", tool), **who},
                     json=tool_call(tool, arguments, 1, meta=meta()))
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


async def _in_session(c: httpx.AsyncClient, url: str, h: dict[str, str], tool: str, arguments: dict[str, Any],
                      ident: int = 2) -> dict[str, Any]:
    """A legacy ``tools/call`` inside the session ``h`` (sent to ``url``): its JSON-RPC response."""
    r = await c.post(f"{url}/mcp", headers=h, json=tool_call(tool, arguments, ident))
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        return next(e for e in events if e.get("id") == ident)
    return dict(r.json())


async def _submit(c: httpx.AsyncClient, url: str, who: dict[str, str], i: int) -> str:
    result = await _modern(c, url, who, "taskqueue_submit", {"task_type": "test.never", "payload": {"i": i}})
    return str(result["structuredContent"]["task_id"])


async def _list_all(c: httpx.AsyncClient, url: str, who: dict[str, str], limit: int) -> list[list[dict[str, Any]]]:
    """Every page of the caller's ``taskqueue_list`` through the node at ``url`` (bounded: 50 pages)."""
    pages, cursor = [], None
    for _ in range(50):
        args: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        out = (await _modern(c, url, who, "taskqueue_list", args))["structuredContent"]
        assert out["partial"] is False and out["unreachable"] == [], out
        pages.append(out["tasks"])
        cursor = out["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the listing did not end within 50 pages")


async def test_the_task_list_spans_the_mesh_for_each_principal_page_by_page(tmp_path: Path) -> None:
    _tokens(tmp_path)
    async with mesh(tmp_path, NAMES, auth={"tokens_file": "tokens"}, taskqueue={"mesh": False}) as apps:
        urls = [url for url, _ in apps.values()]
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=20) as c:
                alice = [await _submit(c, urls[i % 3], ALICE, i) for i in range(7)]
                bob = [await _submit(c, urls[1], BOB, 100)]
                assert {tag_of(t) for t in alice} == {owner_tag(app.state.services.node.peer_id)
                                                      for _, app in apps.values()}
                for url in urls:  # from whichever node: every one of alice's tasks, once, newest first
                    pages = await _list_all(c, url, ALICE, 2)
                    assert all(len(page) <= 2 for page in pages) and len(pages) == 4, pages
                    listed = [t for page in pages for t in page]
                    assert [t["id"] for t in listed] == alice[::-1]
                    assert [t["created_at"] for t in listed] == sorted((t["created_at"] for t in listed), reverse=True)
                pages = await _list_all(c, urls[2], BOB, 50)
                assert [t["id"] for page in pages for t in page] == bob  # bob sees his own only
                one = (await _modern(c, urls[0], ALICE, "taskqueue_list", {"peer": apps["b"][1].state.services.node.peer_id}))
                assert [t["id"] for t in one["structuredContent"]["tasks"]] == [alice[4], alice[1]]  # peer: that node's
                async with httpx.AsyncClient(base_url=urls[1], headers=ALICE) as opener:
                    h = {**await open_session(opener), **ALICE}  # a session on b
                in_session = await _in_session(c, urls[0], h, "taskqueue_list", {"limit": 50})
                assert [t["id"] for t in in_session["result"]["structuredContent"]["tasks"]] == alice[::-1]
                r = await _modern(c, urls[0], ALICE, "taskqueue_list", {"cursor": "not-a-cursor"})
                assert r["isError"] is True and r["structuredContent"]["error"]["code"] == "invalid_cursor"


async def test_a_node_that_does_not_answer_is_named_and_keeps_its_place_in_the_listing(tmp_path: Path) -> None:
    _tokens(tmp_path)
    async with mesh(tmp_path, NAMES, auth={"tokens_file": "tokens"}, taskqueue={"mesh": False},
                    p2p={"call_timeout": 1.0}) as apps:
        urls = [url for url, _ in apps.values()]
        node_a, node_c = apps["a"][1].state.services.node, apps["c"][1].state.services.node
        queue_c = apps["c"][1].state.services.queue
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=20) as c:
                ids = [await _submit(c, url, ALICE, i) for i, url in enumerate(urls)]
                listed = queue_c.list_tasks

                async def hangs(**kwargs: Any) -> Any:  # fault injection: c's queue never answers a listing
                    await trio.sleep_forever()

                queue_c.list_tasks = hangs
                started = trio.current_time()
                out = (await _modern(c, urls[0], ALICE, "taskqueue_list", {"limit": 1}))["structuredContent"]
                assert trio.current_time() - started < 5  # bounded by p2p.call_timeout (1 s here)
                assert out["partial"] is True and [t["id"] for t in out["tasks"]] == [ids[1]]
                assert [u["peer"] for u in out["unreachable"]] == [node_c.peer_id], out
                assert "no answer" in out["unreachable"][0]["error"]
                queue_c.list_tasks = listed  # c answers again: the next pages list its task too
                rest, cursor = [], out["next_cursor"]
                for _ in range(5):
                    if cursor is None:
                        break
                    page = (await _modern(c, urls[0], ALICE, "taskqueue_list", {"limit": 1, "cursor": cursor}))
                    rest += page["structuredContent"]["tasks"]
                    cursor = page["structuredContent"]["next_cursor"]
                assert cursor is None and sorted(t["id"] for t in rest) == sorted([ids[0], ids[2]])
                # c refuses a's streams (a is no longer authorized there): named as not answering, at once
                assert node_c.authorized.revoke(node_a.peer_id)
                await node_a.http.aclose()  # its pooled streams to c were authorized when they opened
                out = (await _modern(c, urls[0], ALICE, "taskqueue_list", {}))["structuredContent"]
                assert out["partial"] is True and [u["peer"] for u in out["unreachable"]] == [node_c.peer_id]
                assert sorted(t["id"] for t in out["tasks"]) == sorted(ids[:2]) and out["next_cursor"] is None


async def test_in_a_legacy_session_a_third_nodes_task_is_served_by_its_owner_as_the_client(tmp_path: Path) -> None:
    _tokens(tmp_path)
    async with mesh(tmp_path, NAMES, auth={"tokens_file": "tokens"}, taskqueue={"mesh": False}) as apps:
        urls = [url for url, _ in apps.values()]
        c_id = apps["c"][1].state.services.node.peer_id
        queue_c, relay_a = apps["c"][1].state.services.queue, apps["a"][1].state.services.relay
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=20) as c:
                task_id = await _submit(c, urls[2], ALICE, 1)  # held by c
                async with httpx.AsyncClient(base_url=urls[0], headers=ALICE) as opener:
                    alice_h = {**await open_session(opener), **ALICE}  # a session on a
                async with httpx.AsyncClient(base_url=urls[0], headers=BOB) as opener:
                    bob_h = {**await open_session(opener), **BOB}
                calls_before = relay_a.statistics.calls
                for url in urls:  # landing anywhere: the session's node (a) asks the task's (c)
                    got = await _in_session(c, url, alice_h, "taskqueue_get", {"task_id": task_id})
                    assert got["result"]["structuredContent"]["task"]["id"] == task_id, got
                    named = await _in_session(c, url, alice_h, "taskqueue_get", {"task_id": task_id, "peer": c_id})
                    assert named["result"]["structuredContent"]["task"]["id"] == task_id, named
                    other = await _in_session(c, url, bob_h, "taskqueue_get", {"task_id": task_id})
                    assert other["result"]["structuredContent"]["error"]["code"] == "task_not_found", other
                assert relay_a.statistics.calls - calls_before == 9
                read = {"jsonrpc": "2.0", "id": 3, "method": "resources/read",
                        "params": {"uri": f"triomcp://tasks/{task_id}"}}
                r = await c.post(f"{urls[1]}/mcp", headers=alice_h, json=read)
                assert json.loads(r.json()["result"]["contents"][0]["text"])["id"] == task_id, r.text
                r = await c.post(f"{urls[1]}/mcp", headers=bob_h, json=read)
                assert r.json()["error"]["code"] == -32002, r.text  # not found: bob's is another principal
                waited = await _in_session(c, urls[1], alice_h, "taskqueue_wait", {"task_id": task_id, "timeout_s": 0.2})
                assert waited["result"]["structuredContent"]["finished"] is False
                bob_cancel = await _in_session(c, urls[1], bob_h, "taskqueue_cancel", {"task_id": task_id})
                assert bob_cancel["result"]["isError"] is True
                cancelled = await _in_session(c, urls[1], alice_h, "taskqueue_cancel", {"task_id": task_id})
                assert cancelled["result"]["structuredContent"]["task"]["state"] == "cancelled", cancelled
                waited = await _in_session(c, urls[2], alice_h, "taskqueue_wait", {"task_id": task_id})
                assert waited["result"]["structuredContent"]["finished"] is True
                # A submit naming c from the session is c's task for alice herself, read back by id alone.
                submitted = await _in_session(c, urls[1], alice_h, "taskqueue_submit",
                                              {"task_type": "test.never", "payload": {}, "peer": c_id})
                new_id = submitted["result"]["structuredContent"]["task_id"]
                assert (await queue_c.get(new_id)).submitter == "token:alice"
                direct = await _modern(c, urls[1], ALICE, "taskqueue_get", {"task_id": new_id})
                assert direct["structuredContent"]["task"]["id"] == new_id


async def test_a_cancelled_wait_in_a_legacy_session_stops_on_the_node_holding_the_task(tmp_path: Path) -> None:
    _tokens(tmp_path)
    async with mesh(tmp_path, NAMES, auth={"tokens_file": "tokens"}, taskqueue={"mesh": False}) as apps:
        urls = [url for url, _ in apps.values()]
        engine_c = apps["c"][1].state.services.engine
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=30) as c:
                task_id = await _submit(c, urls[2], ALICE, 1)
                async with httpx.AsyncClient(base_url=urls[0], headers=ALICE) as opener:
                    h = {**await open_session(opener), **ALICE}
                answered: list[httpx.Response] = []
                async with trio.open_nursery() as nursery:

                    async def wait() -> None:
                        answered.append(await c.post(f"{urls[1]}/mcp", headers=h, json=tool_call(
                            "taskqueue_wait", {"task_id": task_id, "timeout_s": 60}, 7)))

                    nursery.start_soon(wait)
                    for _ in range(200):  # until the wait runs on c (bounded: 10 s)
                        if engine_c.statistics().inflight_calls >= 1:
                            break
                        await trio.sleep(0.05)
                    assert engine_c.statistics().inflight_calls >= 1
                    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
                    assert (await c.post(f"{urls[2]}/mcp", headers=h, json=cancel)).status_code == 202
                    for _ in range(200):  # ... and stops there (bounded: 10 s)
                        if engine_c.statistics().inflight_calls == 0:
                            break
                        await trio.sleep(0.05)
                    assert engine_c.statistics().inflight_calls == 0
                    nursery.cancel_scope.cancel()
                get = await _in_session(c, urls[0], h, "taskqueue_get", {"task_id": task_id})
                assert get["result"]["structuredContent"]["task"]["state"] == "queued"  # the session goes on
