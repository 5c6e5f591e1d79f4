"""The modern era (2026-07-28), rule by rule, driving the engine synchronously."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.mcp.helpers import (
    MODERN,
    check_result,
    error_of,
    initialize,
    legacy,
    make_engine,
    meta,
    modern,
    post,
    run_sync,
)
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply
from triomcp.mcp.versions import SUPPORTED_VERSIONS


def test_discover_lists_every_served_version_and_is_cacheable() -> None:
    reply = modern(make_engine(), "server/discover")
    assert reply.status == 200
    result = reply.body["result"]
    assert result["supportedVersions"] == list(SUPPORTED_VERSIONS)
    assert result["resultType"] == "complete"
    assert result["ttlMs"] >= 0 and result["cacheScope"] in ("public", "private")
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "triomcp"
    check_result("server/discover", MODERN, result)


def test_unsupported_version_is_400_with_supported_list() -> None:
    engine = make_engine()
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/list",
            "params": {"_meta": {**meta(), "io.modelcontextprotocol/protocolVersion": "2030-01-01"}}}
    reply = post(engine, body, {"mcp-protocol-version": "2030-01-01", "mcp-method": "tools/list"})
    assert reply.status == 400
    err = error_of(reply)
    assert err["code"] == -32022
    assert err["data"]["supported"] == list(SUPPORTED_VERSIONS)
    assert err["data"]["requested"] == "2030-01-01"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"mcp-protocol-version": "2025-11-25"}, "MCP-Protocol-Version"),
        ({"mcp-method": "tools/list"}, "Mcp-Method"),
        ({"mcp-name": "crash"}, "Mcp-Name"),
    ],
)
def test_routing_header_mismatch_is_400_32020(headers: dict[str, str], fragment: str) -> None:
    reply = modern(make_engine(), "tools/call", {"name": "echo", "arguments": {"text": "x"}}, headers=headers)
    assert reply.status == 400
    assert error_of(reply)["code"] == -32020
    assert fragment in error_of(reply)["message"]


def test_missing_method_header_is_400_32020() -> None:
    engine = make_engine()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}}
    reply = post(engine, body, {"mcp-protocol-version": MODERN})
    assert reply.status == 400 and error_of(reply)["code"] == -32020


def test_base64_encoded_name_header_is_decoded() -> None:
    reply = modern(make_engine(), "tools/call", {"name": "echo", "arguments": {"text": "x"}},
                   headers={"mcp-name": "=?base64?ZWNobw==?="})
    assert isinstance(reply, Call)


def test_unknown_method_is_404_32601() -> None:
    reply = modern(make_engine(), "tools/frobnicate")
    assert reply.status == 404 and error_of(reply)["code"] == -32601


def test_legacy_only_method_is_unknown_in_modern_era() -> None:
    reply = modern(make_engine(), "ping")
    assert reply.status == 404 and error_of(reply)["code"] == -32601


def test_missing_meta_is_400_invalid_params() -> None:
    engine = make_engine()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    reply = post(engine, body, {"mcp-protocol-version": MODERN, "mcp-method": "tools/list"})
    assert reply.status == 400 and error_of(reply)["code"] == -32602


def test_missing_capabilities_in_meta_is_400() -> None:
    engine = make_engine()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}
    reply = post(engine, body, {"mcp-protocol-version": MODERN, "mcp-method": "tools/list"})
    assert reply.status == 400 and "clientCapabilities" in error_of(reply)["message"]


def test_tools_list_is_sorted_cacheable_and_schema_valid() -> None:
    reply = modern(make_engine(), "tools/list")
    result = reply.body["result"]
    names = [t["name"] for t in result["tools"]]
    assert names == sorted(names) and "echo" in names
    assert result["resultType"] == "complete" and "ttlMs" in result and "cacheScope" in result
    check_result("tools/list", MODERN, result)


def test_tools_call_result_is_structured_ok_and_mirrored_as_text() -> None:
    call = modern(make_engine(), "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    response = run_sync(call)
    assert response is not None
    result = response["result"]
    assert result["structuredContent"] == {"ok": True, "text": "hi"}
    assert result["content"][0] == {"type": "text", "text": '{"ok":true,"text":"hi"}'}
    assert result["isError"] is False and result["resultType"] == "complete"
    check_result("tools/call", MODERN, result)


def test_unknown_tool_is_32602() -> None:
    call = modern(make_engine(), "tools/call", {"name": "nope", "arguments": {}})
    response = run_sync(call)
    assert response is not None and response["error"]["code"] == -32602


def test_missing_client_capability_is_32021_with_required_capabilities() -> None:
    call = modern(make_engine(), "tools/call", {"name": "confirm", "arguments": {"text": "sure?"}})
    response = run_sync(call)
    assert response is not None
    assert response["error"]["code"] == -32021
    assert response["error"]["data"] == {"requiredCapabilities": {"elicitation": {}}}


def test_input_required_round_trip_with_signed_request_state() -> None:
    engine = make_engine()
    caps = {"elicitation": {"form": {}}}
    params = {"name": "confirm", "arguments": {"text": "sure?"}}
    first = run_sync(modern(engine, "tools/call", params, caps=caps))
    assert first is not None
    result = first["result"]
    assert result["resultType"] == "input_required"
    (key, request), = result["inputRequests"].items()
    assert request["method"] == "elicitation/create"
    assert request["params"]["message"] == "sure?"
    check_result("tools/call", MODERN, result)
    retry = {**params, "requestState": result["requestState"],
             "inputResponses": {key: {"action": "accept", "content": {"ok": True}}}}
    second = run_sync(modern(engine, "tools/call", retry, caps=caps, ident=2))
    assert second is not None
    assert second["result"]["structuredContent"] == {"ok": True, "action": "accept", "content": {"ok": True}}


def test_tampered_request_state_is_rejected() -> None:
    engine = make_engine()
    caps = {"elicitation": {}}
    params = {"name": "confirm", "arguments": {"text": "sure?"}}
    first = run_sync(modern(engine, "tools/call", params, caps=caps))
    assert first is not None
    state = first["result"]["requestState"]
    forged = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    retry = {**params, "requestState": forged, "inputResponses": {"input-0": {"action": "accept"}}}
    response = run_sync(modern(engine, "tools/call", retry, caps=caps))
    assert response is not None and response["error"]["code"] == -32602
    # The state is bound to the arguments too.
    moved = {"name": "confirm", "arguments": {"text": "other"}, "requestState": state,
             "inputResponses": {"input-0": {"action": "accept"}}}
    response = run_sync(modern(engine, "tools/call", moved, caps=caps))
    assert response is not None and "does not belong" in response["error"]["message"]


def test_mcp_param_headers_are_validated_against_the_body() -> None:
    engine = make_engine()
    ok = modern(engine, "tools/call", {"name": "keyed", "arguments": {"key": "a b"}},
                headers={"mcp-param-key": "a b"})
    assert run_sync(ok)["result"]["isError"] is False  # type: ignore[index]
    missing = run_sync(modern(engine, "tools/call", {"name": "keyed", "arguments": {"key": "a"}}))
    assert missing is not None and missing["error"]["code"] == -32020
    wrong = run_sync(modern(engine, "tools/call", {"name": "keyed", "arguments": {"key": "a"}},
                            headers={"mcp-param-key": "b"}))
    assert wrong is not None and wrong["error"]["code"] == -32020
    extra = run_sync(modern(engine, "tools/call", {"name": "keyed", "arguments": {"key": "a"}},
                            headers={"mcp-param-key": "a", "mcp-param-region": "eu"}))
    assert extra is not None and extra["error"]["code"] == -32020


def test_tool_schema_marks_header_parameters() -> None:
    tools = {t["name"]: t for t in modern(make_engine(), "tools/list").body["result"]["tools"]}
    assert tools["keyed"]["inputSchema"]["properties"]["key"]["x-mcp-header"] == "Key"


def test_resource_not_found_is_32602_in_modern_era() -> None:
    response = run_sync(modern(make_engine(), "resources/read", {"uri": "test://missing"}))
    assert response is not None and response["error"]["code"] == -32602


def test_resources_read_and_templates() -> None:
    engine = make_engine()
    response = run_sync(modern(engine, "resources/read", {"uri": "test://items/42"}))
    assert response is not None
    assert response["result"]["contents"] == [{"uri": "test://items/42", "mimeType": "text/plain", "text": "item 42"}]
    check_result("resources/read", MODERN, response["result"])
    templates = modern(engine, "resources/templates/list").body["result"]
    assert templates["resourceTemplates"][0]["uriTemplate"] == "test://items/{item}"
    check_result("resources/templates/list", MODERN, templates)


def test_subscriptions_listen_acknowledges_first_with_subscription_id() -> None:
    engine = make_engine()
    outcome = modern(engine, "subscriptions/listen",
                     {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["test://doc"]}}, ident=9)
    assert isinstance(outcome, Listen)
    ack = outcome.acknowledgement
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9
    assert ack["params"]["notifications"] == {"toolsListChanged": True, "resourceSubscriptions": ["test://doc"]}
    got: list[object] = []
    detach = engine.attach_listener(outcome, got.append)
    engine.notify_resource_updated("test://doc")
    engine.notify_resource_updated("test://other")
    engine.registry.remove_tool("crash")
    detach()
    engine.registry.remove_tool("fail")
    assert [m["method"] for m in got] == [  # type: ignore[index]
        "notifications/resources/updated", "notifications/tools/list_changed"]
    assert all(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9 for m in got)  # type: ignore[index]


def test_listen_never_sends_types_not_asked_for() -> None:
    engine = make_engine()
    outcome = modern(engine, "subscriptions/listen", {"notifications": {"promptsListChanged": True}})
    got: list[object] = []
    engine.attach_listener(outcome, got.append)
    engine.registry.remove_tool("crash")
    engine.notify_resource_updated("test://doc")
    assert got == []


def test_notification_post_is_202_and_response_post_is_rejected() -> None:
    engine = make_engine()
    h = {"mcp-protocol-version": MODERN}
    assert post(engine, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}, h).status == 202
    reply = post(engine, {"jsonrpc": "2.0", "id": 1, "result": {}}, h)
    assert reply.status == 400


def test_get_and_delete_without_session_are_405() -> None:
    from triomcp.mcp.outcomes import HttpRequest

    engine = make_engine()
    for method in ("GET", "DELETE"):
        reply = engine.handle(HttpRequest(method, {"accept": "text/event-stream"}))
        assert isinstance(reply, Reply) and reply.status == 405


@pytest.mark.parametrize(
    ("header", "in_meta"),
    [
        (MODERN, "2030-01-01"),  # the conformance suite's case: a served header, an unknown body version
        ("2030-01-01", MODERN),
        ("2025-11-25", MODERN),
        ("2030-01-01", "2025-11-25"),
        (None, MODERN),
    ],
)
def test_header_and_meta_versions_that_disagree_are_32020_not_32022(header: str | None, in_meta: str) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "server/discover",
            "params": {"_meta": {**meta(), "io.modelcontextprotocol/protocolVersion": in_meta}}}
    headers = {"mcp-method": "server/discover"}
    if header is not None:
        headers["mcp-protocol-version"] = header
    reply = post(make_engine(), body, headers)
    assert reply.status == 400
    assert error_of(reply)["code"] == -32020 and "MCP-Protocol-Version" in error_of(reply)["message"]
    assert reply.body["id"] == 3


def test_a_modern_notification_whose_header_disagrees_with_its_meta_is_32020() -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"_meta": meta()}}
    reply = post(make_engine(), body, {"mcp-protocol-version": "2030-01-01"})
    assert reply.status == 400 and error_of(reply)["code"] == -32020


def test_a_version_unsupported_everywhere_is_still_32022() -> None:
    engine = make_engine()
    sid = initialize(engine)
    plain = {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}
    for headers in ({"mcp-protocol-version": "2030-01-01"},  # a header alone, no session
                    {"mcp-protocol-version": "2030-01-01", "mcp-session-id": sid}):  # a header alone, legacy
        reply = post(engine, plain, headers)
        assert reply.status == 400 and error_of(reply)["code"] == -32022, headers
        assert error_of(reply)["data"]["requested"] == "2030-01-01"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_nan_and_infinity_are_parse_errors(constant: bytes, era: str) -> None:
    engine = make_engine()
    if era == "modern":
        headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
        params = b'{"name":"echo","arguments":{"text":"x","n":%s},"_meta":%s}' % (constant, json.dumps(meta()).encode())
    else:
        headers = {"mcp-session-id": initialize(engine), "mcp-protocol-version": "2025-11-25"}
        params = b'{"name":"echo","arguments":{"text":"x","n":%s}}' % constant
    reply = post(engine, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":%s}' % params, headers)
    assert isinstance(reply, Reply) and reply.status == 400
    assert error_of(reply)["code"] == -32700 and reply.body["id"] is None
    assert error_of(post(engine, constant, headers))["code"] == -32700  # a bare constant too


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_from_a_modern_client_are_405_even_with_a_session_id(method: str) -> None:
    engine = make_engine()
    sid = initialize(engine)
    for extra in ({}, {"mcp-session-id": sid}, {"mcp-session-id": "no-such-session"}):
        headers = {"accept": "text/event-stream", "mcp-protocol-version": MODERN, **extra}
        reply = engine.handle(HttpRequest(method, headers))
        assert isinstance(reply, Reply) and reply.status == 405, extra
        assert reply.headers["Allow"] == "POST"
    assert legacy(engine, sid, "ping").body["result"] == {}  # the session was not ended


def test_listen_streams_end_with_a_completion_result_at_shutdown() -> None:
    engine = make_engine()
    outcome = modern(engine, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, ident=41)
    assert isinstance(outcome, Listen)
    got: list[dict[str, Any] | None] = []
    engine.attach_listener(outcome, got.append)
    engine.close_listeners()
    assert len(got) == 2 and got[1] is None  # the completion result, then the end of the stream
    response = got[0]
    assert response is not None and response["id"] == 41 and "error" not in response
    result = response["result"]
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/subscriptionId"] == 41
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "triomcp"
    check_result("subscriptions/listen", MODERN, result)
    assert engine.statistics().listeners == 0


def test_discover_has_server_info_only_in_result_meta() -> None:
    result = modern(make_engine(instructions="hi"), "server/discover").body["result"]
    assert "serverInfo" not in result
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"] == {"name": "triomcp", "version": "0"}
    check_result("server/discover", MODERN, result)


def test_client_info_in_meta_is_optional() -> None:
    engine = make_engine()
    assert "io.modelcontextprotocol/clientInfo" not in meta()
    call = modern(engine, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    response = run_sync(call)
    assert response is not None and response["result"]["structuredContent"] == {"ok": True, "text": "hi"}
    assert modern(engine, "server/discover").status == 200
