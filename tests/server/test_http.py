"""Raw HTTP against real Hypercorn: every status-code path, SSE, resumption, listen streams."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from tests import sseclient
from tests.conftest import run_app
from tests.helpers.http import (
    ACCEPT,
    JSON_HEADERS,
    MODERN,
    meta,
    modern_headers,
    open_session,
    watcher_started,
)
from tests.toolkit import CANCELLED_EVENTS, GATES, STARTED


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        yield c


async def test_health_and_readiness(server: str) -> None:
    async with client(server) as c:
        assert (await c.get("/healthz")).json()["status"] == "alive"
        assert (await c.get("/readyz")).json() == {"ready": True}


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "text/plain", "accept": ACCEPT}, b"{}", 415),
        ({"content-type": "application/json", "accept": "text/html"}, b"{}", 406),
        (JSON_HEADERS, b"{not json", 400),
        (JSON_HEADERS, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', 400),
        ({**JSON_HEADERS, "mcp-session-id": "nope"}, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', 404),
        ({**JSON_HEADERS, "mcp-protocol-version": "2099-01-01"}, b'{"jsonrpc":"2.0","id":1,"method":"x"}', 400),
        (JSON_HEADERS, b'[]', 400),
        (JSON_HEADERS, b'"just a string"', 400),
    ],
)
async def test_post_status_codes(server: str, headers: dict[str, str], body: bytes, status: int) -> None:
    async with client(server) as c:
        r = await c.post("/mcp", headers=headers, content=body)
        assert r.status_code == status
        assert r.json()["jsonrpc"] == "2.0" and "error" in r.json()


async def test_parse_error_is_32700(server: str) -> None:
    async with client(server) as c:
        r = await c.post("/mcp", headers=JSON_HEADERS, content=b"\xff\xfe")
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700 and r.json()["id"] is None


async def test_body_limit_is_413(app_factory: Any) -> None:
    async with run_app(app_factory(http={"max_body_bytes": 1000})) as url, client(url) as c:
        r = await c.post("/mcp", headers=JSON_HEADERS, content=b"{" + b" " * 5000 + b"}")
        assert r.status_code == 413
        assert (await c.get("/healthz")).status_code == 200  # still serving


async def test_get_and_delete_without_session_are_405(server: str) -> None:
    async with client(server) as c:
        assert (await c.get("/mcp", headers={"accept": "text/event-stream"})).status_code == 405
        assert (await c.delete("/mcp")).status_code == 405
        assert (await c.put("/mcp", content=b"{}")).status_code == 405


@pytest.mark.parametrize(("header", "value", "status"), [
    ("origin", "https://evil.example", 403),
    ("origin", "http://localhost:3000", 200),
    ("origin", "http://127.0.0.1:6274", 200),
    ("host", "evil.example", 421),
    ("host", "localhost:8080", 200),
])
async def test_origin_and_host_checks(server: str, header: str, value: str, status: int) -> None:
    async with client(server) as c:
        r = await c.get("/healthz", headers={header: value})
        assert r.status_code == status


async def test_configured_origin_and_host_are_allowed(app_factory: Any) -> None:
    app = app_factory(http={"allowed_hosts": ["mcp.example.com"], "allowed_origins": ["https://app.example.com"]})
    async with run_app(app) as url, client(url) as c:
        assert (await c.get("/healthz", headers={"host": "mcp.example.com"})).status_code == 200
        assert (await c.get("/healthz", headers={"host": "127.0.0.1"})).status_code == 421
        r = await c.get("/healthz", headers={"host": "mcp.example.com", "origin": "https://app.example.com"})
        assert r.status_code == 200


async def test_legacy_session_lifecycle(server: str) -> None:
    async with client(server) as c:
        h = await open_session(c)
        r = await c.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert (await c.delete("/mcp", headers=h)).status_code == 200
        r = await c.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert r.status_code == 404


async def test_modern_errors_carry_http_status(server: str) -> None:
    async with client(server) as c:
        r = await c.post("/mcp", headers=modern_headers("nope"),
                         json={"jsonrpc": "2.0", "id": 1, "method": "nope", "params": {"_meta": meta()}})
        assert r.status_code == 404 and r.json()["error"]["code"] == -32601
        r = await c.post("/mcp", headers=modern_headers("tools/call", "nope"),
                         json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                               "params": {"name": "nope", "arguments": {}, "_meta": meta()}})
        assert r.status_code == 400 and r.json()["error"]["code"] == -32602


async def test_modern_sse_carries_progress_then_the_response(server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 2}, "_meta": meta(progressToken="p")}}
    async with sseclient.request(server, "POST", "/mcp", modern_headers("tools/call", "progress"), body) as r:
        assert r.headers["content-type"] == "text/event-stream"
        events = await r.read(3)
    methods = [e["data"].get("method") for e in events]
    # The request carried no _meta logLevel, so the tool's log calls send nothing.
    assert methods == ["notifications/progress", "notifications/progress", None]
    assert [e["data"]["params"]["progress"] for e in events[:2]] == [1, 2]
    final = events[-1]["data"]
    assert final["id"] == 7 and final["result"]["structuredContent"] == {"ok": True, "steps": 2}
    assert all("id" not in e for e in events)  # modern streams are not resumable


async def test_modern_json_only_client_gets_json(server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 2}, "_meta": meta(progressToken="p")}}
    headers = {**modern_headers("tools/call", "progress"), "accept": "application/json"}
    async with client(server) as c:
        r = await c.post("/mcp", headers=headers, json=body)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["result"]["structuredContent"]["steps"] == 2


async def test_legacy_stream_resumes_with_last_event_id(server: str) -> None:
    tag = "resume-1"
    STARTED[tag], GATES[tag] = trio.Event(), trio.Event()
    async with client(server) as c:
        h = await open_session(c)
        body = {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                "params": {"name": "gate", "arguments": {"text": tag}, "_meta": {"progressToken": "g"}}}
        with trio.fail_after(10):
            async with sseclient.request(server, "POST", "/mcp", h, body) as r:
                assert r.headers["content-type"] == "text/event-stream"
                first = await r.read(2)  # priming event, then progress 1
                await STARTED[tag].wait()
            # the connection is gone; the call goes on (legacy: a disconnect is not a cancel)
            assert first[0]["data"] is None and first[1]["data"]["params"]["progress"] == 1
            GATES[tag].set()
            resume = {**h, "accept": "text/event-stream", "last-event-id": first[1]["id"]}
            async with sseclient.request(server, "GET", "/mcp", resume) as r:
                assert r.status == 200
                rest = await r.read(2)
    assert rest[0]["data"]["params"]["progress"] == 2
    assert rest[1]["data"]["id"] == 11 and rest[1]["data"]["result"]["structuredContent"]["text"] == tag
    ids = [e["id"] for e in first + rest]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("accept", ["application/json, text/event-stream", "application/json"])
async def test_modern_client_leaving_cancels_the_call(app_factory: Any, accept: str) -> None:
    tag = f"leave-{accept}"
    STARTED[tag] = trio.Event()
    body = {"jsonrpc": "2.0", "id": 12, "method": "tools/call",
            "params": {"name": "block", "arguments": {"text": tag}, "_meta": meta()}}
    headers = {**modern_headers("tools/call", "block"), "accept": accept}
    app = app_factory()
    watching = watcher_started(app)
    async with run_app(app) as server:
        with trio.fail_after(10):
            async with client(server) as c, trio.open_nursery() as nursery:
                nursery.start_soon(lambda: c.post("/mcp", headers=headers, json=body))
                await STARTED[tag].wait()
                await watching.wait()  # the call outlived LateWatchers.after: its disconnect watcher runs
                nursery.cancel_scope.cancel()  # the client leaves: its connection closes
            await CANCELLED_EVENTS.setdefault(tag, trio.Event()).wait()  # modern: leaving is cancelling


async def test_a_call_that_leaves_at_once_is_cancelled_too(server: str) -> None:
    tag = "leave-at-once"
    STARTED[tag] = trio.Event()
    body = {"jsonrpc": "2.0", "id": 13, "method": "tools/call",
            "params": {"name": "block", "arguments": {"text": tag}, "_meta": meta()}}
    with trio.fail_after(10):
        async with client(server) as c, trio.open_nursery() as nursery:
            nursery.start_soon(lambda: c.post("/mcp", headers=modern_headers("tools/call", "block"), json=body))
            await STARTED[tag].wait()
            nursery.cancel_scope.cancel()  # before its watcher exists: the watcher sees the disconnect later
        await CANCELLED_EVENTS.setdefault(tag, trio.Event()).wait()


async def test_last_event_id_of_another_session_is_refused(server: str) -> None:
    async with client(server) as c:
        h1 = await open_session(c)
        h2 = await open_session(c)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "progress", "arguments": {"steps": 1}, "_meta": {"progressToken": 1}}}
        async with sseclient.request(server, "POST", "/mcp", h1, body) as r:
            events = await r.read(4)
        last = events[1]["id"]
        r = await c.get("/mcp", headers={**h2, "accept": "text/event-stream", "last-event-id": last})
        assert r.status_code == 400


async def test_get_stream_delivers_server_notifications(app_factory: Any) -> None:
    app = app_factory()
    engine = app.state.services.engine
    async with run_app(app) as url, client(url) as c:
        h = await open_session(c)
        r = await c.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                                                  "params": {"uri": "test://doc"}})
        assert r.json()["result"] == {}
        with trio.fail_after(10):
            async with sseclient.request(url, "GET", "/mcp", {**h, "accept": "text/event-stream"}) as stream:
                engine.notify_resource_updated("test://doc")
                engine.registry.remove_tool("crash")
                events = await stream.read(2)
    assert [e["data"]["method"] for e in events] == ["notifications/resources/updated",
                                                     "notifications/tools/list_changed"]
    assert events[0]["data"]["params"]["uri"] == "test://doc"


async def test_modern_listen_stream(app_factory: Any) -> None:
    app = app_factory()
    engine = app.state.services.engine
    body = {"jsonrpc": "2.0", "id": 5, "method": "subscriptions/listen",
            "params": {"notifications": {"toolsListChanged": True}, "_meta": meta()}}
    async with run_app(app) as url:
        with trio.fail_after(10):
            async with sseclient.request(url, "POST", "/mcp", modern_headers("subscriptions/listen"), body) as r:
                ack = await r.read(1)
                engine.registry.remove_tool("crash")
                note = await r.read(1)
    assert ack[0]["data"]["method"] == "notifications/subscriptions/acknowledged"
    assert note[0]["data"]["method"] == "notifications/tools/list_changed"
    assert note[0]["data"]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 5


async def test_server_keeps_serving_after_garbage(server: str) -> None:
    async with client(server) as c:
        for junk in (b"", b"null", b"[1,2]", b'{"jsonrpc":"1.0"}', b'{"jsonrpc":"2.0","id":{},"method":"x"}',
                     b'{"jsonrpc":"2.0","id":1,"method":5}', b"[" * 10000):
            r = await c.post("/mcp", headers=JSON_HEADERS, content=junk)
            assert 400 <= r.status_code < 500, (junk[:20], r.status_code)
        assert (await c.get("/healthz")).status_code == 200


async def test_nan_and_infinity_are_parse_errors(server: str) -> None:
    async with client(server) as c:
        for body in (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":NaN}}', b"Infinity", b"[-Infinity]"):
            r = await c.post("/mcp", headers=JSON_HEADERS, content=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == -32700, body


async def test_get_and_delete_from_a_modern_client_are_405(server: str) -> None:
    async with client(server) as c:
        h = await open_session(c)
        modern_h = {**h, "mcp-protocol-version": MODERN, "accept": "text/event-stream"}
        assert (await c.get("/mcp", headers=modern_h)).status_code == 405
        r = await c.delete("/mcp", headers=modern_h)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = await c.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.json()["result"] == {}  # the session goes on


async def test_a_quiet_call_resumes_as_soon_as_its_client_has_left(server: str) -> None:
    """The client's SSE connection drops while the tool sends nothing; a GET with Last-Event-ID
    resumes it at once (not only at the tool's next event, which may be minutes away).

    The official SDK retries a refused resumption after 1 s and 2 s, then gives up: this client
    retries a 409 (the server may not have read the disconnect yet) for at most 1 s."""
    tag = "quiet-1"
    STARTED[tag], GATES[tag] = trio.Event(), trio.Event()
    async with client(server) as c:
        h = await open_session(c)
        body = {"jsonrpc": "2.0", "id": 21, "method": "tools/call",
                "params": {"name": "gate", "arguments": {"text": tag}, "_meta": {"progressToken": "q"}}}
        with trio.fail_after(10):
            async with sseclient.request(server, "POST", "/mcp", h, body) as r:
                first = await r.read(2)  # priming event, then progress 1; then the tool is quiet
                await STARTED[tag].wait()
        resume = {**h, "accept": "text/event-stream", "last-event-id": first[1]["id"]}
        left = trio.current_time()
        refused = 0
        with trio.fail_after(1.0):
            while True:
                async with sseclient.request(server, "GET", "/mcp", resume) as r:
                    if r.status == 409:
                        refused += 1
                        await trio.sleep(0.01)  # the client's retry pause, as the SDK's (1 s) but shorter
                        continue
                    assert r.status == 200
                    resumed_after = trio.current_time() - left
                    GATES[tag].set()  # only now does the tool send anything again
                    rest = await r.read(2)
                    break
    assert rest[0]["data"]["params"]["progress"] == 2
    assert rest[1]["data"]["id"] == 21 and rest[1]["data"]["result"]["structuredContent"]["text"] == tag
    assert resumed_after < 1.0, (resumed_after, refused)


async def test_a_tool_can_close_its_stream_and_the_client_resumes_it(server: str) -> None:
    """SSE polling (2025-11-25): the priming event carries ``retry``, the server ends the response
    mid-call, and a GET with Last-Event-ID gets what came after, the result included."""
    tag = "polled-1"
    STARTED[tag], GATES[tag] = trio.Event(), trio.Event()
    async with client(server) as c:
        h = await open_session(c)
        body = {"jsonrpc": "2.0", "id": 31, "method": "tools/call",
                "params": {"name": "polled", "arguments": {"text": tag}, "_meta": {"progressToken": "p"}}}
        with trio.fail_after(10):
            async with sseclient.request(server, "POST", "/mcp", h, body) as r:
                (priming,) = await r.read(1)
                assert priming["data"] is None and int(priming["retry"]) > 0
                assert await r.read_body() == b"" and r.ended  # the server let the client go
            await STARTED[tag].wait()
            GATES[tag].set()
            resume = {**h, "accept": "text/event-stream", "last-event-id": priming["id"]}
            async with sseclient.request(server, "GET", "/mcp", resume) as r:
                assert r.status == 200
                rest = await r.read(2)
    assert rest[0]["data"]["method"] == "notifications/progress"
    assert rest[1]["data"]["id"] == 31 and rest[1]["data"]["result"]["structuredContent"]["text"] == tag


async def test_listen_stream_ends_with_a_completion_result_when_the_server_stops(app_factory: Any) -> None:
    app = app_factory()
    services = app.state.services
    body = {"jsonrpc": "2.0", "id": "listen-9", "method": "subscriptions/listen",
            "params": {"notifications": {"toolsListChanged": True}, "_meta": meta()}}
    async with run_app(app) as url:
        with trio.fail_after(10):
            async with sseclient.request(url, "POST", "/mcp", modern_headers("subscriptions/listen"), body) as r:
                ack = await r.read(1)
                services.stopping.set()  # what the lifespan and the runner do when the server stops
                services.engine.close_listeners()
                done = await r.read(1)
                await r.read_body()
                assert r.ended
    assert ack[0]["data"]["method"] == "notifications/subscriptions/acknowledged"
    response = done[0]["data"]
    assert response["id"] == "listen-9" and response["result"]["resultType"] == "complete"
    assert response["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-9"
    assert response["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "triomcp"
