"""The legacy era (2024-11-05 .. 2025-11-25), rule by rule, driving the engine directly."""

from __future__ import annotations

import pytest
import trio

from tests.mcp.helpers import (
    check_result,
    error_of,
    initialize,
    legacy,
    make_engine,
    post,
    run_sync,
)
from tests.toolkit import CANCELLED, STARTED
from triomcp.mcp.outcomes import HttpRequest, Reply, StreamGrant
from triomcp.mcp.session import TRANSITIONS, SessionState
from triomcp.mcp.versions import LATEST_LEGACY_VERSION, LEGACY_VERSIONS
from triomcp.testing import McpTestClient


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_initialize_echoes_a_served_version(version: str) -> None:
    engine = make_engine()
    reply = post(engine, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert reply.status == 200
    assert reply.body["result"]["protocolVersion"] == version
    check_result("initialize", version, reply.body["result"])
    sid = reply.headers["mcp-session-id"]
    assert len(sid) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in sid)


def test_initialize_counter_offers_latest_for_unknown_version() -> None:
    reply = post(make_engine(), {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "1999-01-01", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert reply.body["result"]["protocolVersion"] == LATEST_LEGACY_VERSION


def test_session_ids_are_unique() -> None:
    engine = make_engine()
    assert len({initialize(engine) for _ in range(50)}) == 50


def test_missing_session_is_400_and_unknown_is_404() -> None:
    engine = make_engine()
    reply = post(engine, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert reply.status == 400
    reply = legacy(engine, "no-such-session", "tools/list")
    assert reply.status == 404


def test_delete_ends_the_session_then_404() -> None:
    engine = make_engine()
    sid = initialize(engine)
    reply = engine.handle(HttpRequest("DELETE", {"mcp-session-id": sid}))
    assert isinstance(reply, Reply) and reply.status == 200
    assert legacy(engine, sid, "ping").status == 404
    again = engine.handle(HttpRequest("DELETE", {"mcp-session-id": sid}))
    assert isinstance(again, Reply) and again.status == 404


def test_idle_sessions_expire() -> None:
    now = [1000.0]
    engine = make_engine(session_idle_timeout=60.0, clock=lambda: now[0])
    sid = initialize(engine)
    now[0] += 30
    assert legacy(engine, sid, "ping").status == 200
    now[0] += 61
    assert legacy(engine, sid, "ping").status == 404


def test_session_is_bound_to_its_principal() -> None:
    engine = make_engine()
    sid = initialize(engine, principal="alice")
    assert legacy(engine, sid, "ping", principal="alice").status == 200
    assert legacy(engine, sid, "ping", principal="mallory").status == 404
    assert legacy(engine, sid, "ping", principal=None).status == 404


def test_session_lifecycle_table() -> None:
    assert TRANSITIONS[(SessionState.AWAITING_INITIALIZED, "initialized")] is SessionState.READY
    assert all(new is SessionState.CLOSED for (state, event), new in TRANSITIONS.items() if event in ("delete", "expire"))
    assert not any(state is SessionState.CLOSED for state, _ in TRANSITIONS)


def test_ping_set_level_and_version_header_checks() -> None:
    engine = make_engine()
    sid = initialize(engine)
    assert legacy(engine, sid, "ping").body == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert legacy(engine, sid, "logging/setLevel", {"level": "error"}).body["result"] == {}
    assert engine.sessions.get(sid, principal=None, now=engine.clock()).log_level == "error"
    assert legacy(engine, sid, "ping", version="2025-06-18").status == 400
    assert legacy(engine, sid, "ping", version="2031-01-01").status == 400


def test_unknown_method_is_a_jsonrpc_error() -> None:
    engine = make_engine()
    sid = initialize(engine)
    reply = legacy(engine, sid, "tools/frobnicate")
    assert error_of(reply)["code"] == -32601


def test_modern_methods_are_not_served_in_legacy_sessions() -> None:
    engine = make_engine()
    sid = initialize(engine)
    assert error_of(legacy(engine, sid, "server/discover"))["code"] == -32601


def test_batches_rejected_from_2025_06_18() -> None:
    engine = make_engine()
    sid = initialize(engine, "2025-06-18")
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}]
    reply = post(engine, batch, {"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"})
    assert reply.status == 400 and error_of(reply)["code"] == -32600


def test_batches_answered_in_2025_03_26() -> None:
    engine = make_engine()
    sid = initialize(engine, "2025-03-26")
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"jsonrpc": "2.0", "id": 3, "method": "x"}]
    reply = post(engine, batch, {"mcp-session-id": sid, "mcp-protocol-version": "2025-03-26"})
    assert reply.status == 200
    assert [r["id"] for r in reply.body] == [1, 2, 3]
    assert reply.body[2]["error"]["code"] == -32601


def test_tools_call_validation_failure_is_is_error_result() -> None:
    engine = make_engine()
    sid = initialize(engine)
    call = legacy(engine, sid, "tools/call", {"name": "echo", "arguments": {"text": 5}})
    result = run_sync(call)["result"]  # type: ignore[index]
    assert result["isError"] is True
    assert result["structuredContent"]["ok"] is False
    assert result["structuredContent"]["error"]["code"] == "invalid_arguments"


@pytest.mark.parametrize(("tool", "code"), [("fail", "on_purpose"), ("crash", "internal_error")])
def test_tool_failures_are_structured(tool: str, code: str) -> None:
    engine = make_engine()
    sid = initialize(engine)
    result = run_sync(legacy(engine, sid, "tools/call", {"name": tool, "arguments": {"text": "x"}}))["result"]  # type: ignore[index]
    assert result["isError"] is True and result["structuredContent"]["error"]["code"] == code
    check_result("tools/call", LATEST_LEGACY_VERSION, result)


def test_unknown_tool_and_bad_params_are_32602() -> None:
    engine = make_engine()
    sid = initialize(engine)
    assert run_sync(legacy(engine, sid, "tools/call", {"name": "nope"}))["error"]["code"] == -32602  # type: ignore[index]
    reply = legacy(engine, sid, "tools/call", {"arguments": {}})
    assert error_of(reply)["code"] == -32602


def test_every_content_kind() -> None:
    engine = make_engine()
    sid = initialize(engine)
    result = run_sync(legacy(engine, sid, "tools/call", {"name": "media", "arguments": {}}))["result"]  # type: ignore[index]
    assert [c["type"] for c in result["content"]] == ["text", "image", "audio", "resource", "resource_link"]
    check_result("tools/call", LATEST_LEGACY_VERSION, result)


def test_pagination_with_opaque_cursor() -> None:
    engine = make_engine(page_size=3)
    sid = initialize(engine)
    names: list[str] = []
    cursor = None
    for i in range(10):
        params = {"cursor": cursor} if cursor else {}
        result = legacy(engine, sid, "tools/list", params, ident=i + 1).body["result"]
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert names == sorted(t.name for t in engine.registry.tools())
    assert error_of(legacy(engine, sid, "tools/list", {"cursor": "garbage!"}))["code"] == -32602


def test_resources_prompts_completion_and_not_found() -> None:
    engine = make_engine()
    sid = initialize(engine)
    listed = legacy(engine, sid, "resources/list").body["result"]
    assert [r["uri"] for r in listed["resources"]] == ["test://blob", "test://doc"]
    blob = run_sync(legacy(engine, sid, "resources/read", {"uri": "test://blob"}))["result"]  # type: ignore[index]
    assert blob["contents"][0]["blob"] == "AAEC"
    missing = run_sync(legacy(engine, sid, "resources/read", {"uri": "test://none"}))
    assert missing["error"]["code"] == -32002  # type: ignore[index]
    prompt = run_sync(legacy(engine, sid, "prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}))
    assert "Ada" in prompt["result"]["messages"][0]["content"]["text"]  # type: ignore[index]
    bad = run_sync(legacy(engine, sid, "prompts/get", {"name": "greet", "arguments": {}}))
    assert bad["error"]["code"] == -32602  # type: ignore[index]
    done = run_sync(legacy(engine, sid, "completion/complete", {
        "ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "name", "value": "al"}}))
    assert done["result"]["completion"]["values"] == ["alice", "albert"]  # type: ignore[index]


def test_subscribe_then_updates_reach_the_get_stream() -> None:
    engine = make_engine()
    sid = initialize(engine)
    assert legacy(engine, sid, "resources/subscribe", {"uri": "test://doc"}).body["result"] == {}
    engine.notify_resource_updated("test://doc")
    engine.notify_resource_updated("test://blob")
    grant = engine.handle(HttpRequest("GET", {"mcp-session-id": sid, "accept": "text/event-stream"}))
    assert isinstance(grant, StreamGrant)
    assert [e.data["method"] for e in grant.replay if e.data] == ["notifications/resources/updated"]


def test_resumption_replays_only_that_streams_events() -> None:
    engine = make_engine()
    sid_a = initialize(engine)
    sid_b = initialize(engine)
    session_a = engine.sessions.get(sid_a, principal=None, now=engine.clock())
    session_b = engine.sessions.get(sid_b, principal=None, now=engine.clock())
    one, two = session_a.open_stream(), session_a.open_stream()
    first = one.push({"n": 1})
    one.push({"n": 2})
    two.push({"n": 99})
    session_b.open_stream().push({"n": -1})
    grant = engine.handle(HttpRequest("GET", {"mcp-session-id": sid_a, "accept": "text/event-stream",
                                              "last-event-id": first.id}))
    assert isinstance(grant, StreamGrant)
    assert [e.data for e in grant.replay] == [{"n": 2}]
    # Another session cannot resume session A's stream.
    foreign = engine.handle(HttpRequest("GET", {"mcp-session-id": sid_b, "accept": "text/event-stream",
                                                "last-event-id": first.id}))
    assert isinstance(foreign, Reply) and foreign.status == 400


def test_replay_buffer_is_bounded() -> None:
    engine = make_engine(replay_buffer_events=4)
    sid = initialize(engine)
    stream = engine.sessions.get(sid, principal=None, now=engine.clock()).open_stream()
    events = [stream.push({"n": i}) for i in range(10)]
    assert [e.data for e in stream.after(0)] == [{"n": i} for i in range(6, 10)]
    assert events[-1].id.endswith(".10")


def test_get_requires_sse_accept_and_one_stream_per_session() -> None:
    engine = make_engine()
    sid = initialize(engine)
    bad = engine.handle(HttpRequest("GET", {"mcp-session-id": sid, "accept": "application/json"}))
    assert isinstance(bad, Reply) and bad.status == 406
    grant = engine.handle(HttpRequest("GET", {"mcp-session-id": sid, "accept": "text/event-stream"}))
    assert isinstance(grant, StreamGrant)
    grant.stream.listener = lambda event: None
    second = engine.handle(HttpRequest("GET", {"mcp-session-id": sid, "accept": "text/event-stream"}))
    assert isinstance(second, Reply) and second.status == 409


async def test_cancelled_notification_reaches_the_running_call() -> None:
    # The client sends notifications/cancelled for the request when the scope its call runs in is
    # cancelled, and returns once the handler has stopped: no response was sent for it.
    engine = make_engine()
    async with McpTestClient(engine, era="legacy") as client:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "block", {"text": "legacy-cancel"})
                await STARTED.setdefault("legacy-cancel", trio.Event()).wait()
                assert engine.statistics().inflight_calls == 1
                nursery.cancel_scope.cancel()
        assert "legacy-cancel" in CANCELLED and engine.statistics().inflight_calls == 0


async def test_elicitation_goes_to_the_client_in_legacy_era() -> None:
    async with McpTestClient(make_engine(), era="legacy", elicitation=lambda params: {"action": "decline"}) as client:
        result = await client.call_tool("confirm", {"text": "sure?"})
    assert [method for method, _params in client.input_requests] == ["elicitation/create"]
    assert result["structuredContent"]["action"] == "decline"


async def test_elicitation_without_capability_fails_the_tool_in_legacy_era() -> None:
    async with McpTestClient(make_engine(), era="legacy") as client:  # declares no elicitation
        result = await client.call_tool("confirm", {"text": "?"})
    assert result["structuredContent"]["error"]["code"] == "capability_missing"
    assert client.input_requests == []


async def test_progress_is_sent_with_the_token_and_increases() -> None:
    async with McpTestClient(make_engine(), era="legacy") as client:
        await client.call_tool("progress", {"steps": 3})
    assert [p["progress"] for p in client.progress] == [1, 2, 3]
    assert len({p["progressToken"] for p in client.progress}) == 1  # the token the request carried
    assert len(client.logs) == 3


def test_client_response_resolves_pending_server_request() -> None:
    engine = make_engine()
    sid = initialize(engine)
    session = engine.sessions.get(sid, principal=None, now=engine.clock())
    got: list[object] = []
    session.pending["srv-1"] = got.append
    reply = post(engine, {"jsonrpc": "2.0", "id": "srv-1", "result": {"action": "accept"}}, {"mcp-session-id": sid})
    assert reply.status == 202 and got and "srv-1" not in session.pending
