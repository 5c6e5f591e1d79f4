"""Which node serves a request (``triomcp.mcp.routing``, sans-I/O): a table of requests and the route."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from triomcp._owner import owner_tag, tag_of, tagged
from triomcp.mcp.context import ToolContext
from triomcp.mcp.engine import Engine, EngineConfig
from triomcp.mcp.outcomes import NOT_DECODED, HttpRequest, Reply
from triomcp.mcp.registry import Registry
from triomcp.mcp.request_state import RequestStateSigner
from triomcp.mcp.results import modern_meta
from triomcp.mcp.routing import OwnerRoute, owner_named, route

OWN, OTHER = "aaaaaaaa", "bbbbbbbb"
PEER = "12D3KooWRQUueBPfiFUULiccYajmffFDgQnbZouDWecMbxm7xYCB"


class TaskRef(BaseModel):
    task_id: str
    peer: str | None = None


class Text(BaseModel):
    text: str
    peer: str | None = None


def _registry() -> Registry:
    registry = Registry()

    async def task_tool(args: TaskRef, ctx: ToolContext) -> TaskRef:
        return args

    async def plain(args: Text, ctx: ToolContext) -> Text:
        return args

    registry.tool("task_tool", owner_argument="task_id", peer_argument="peer")(task_tool)
    registry.tool("plain")(plain)  # a "peer" argument that names no node to serve the call

    async def read_task(variables: dict[str, str], ctx: ToolContext) -> str:
        return variables["task_id"]

    async def read_item(variables: dict[str, str], ctx: ToolContext) -> str:
        return variables["id"]

    registry.resource_template("test://tasks/{task_id}", name="task", owner_variable="task_id")(read_task)
    registry.resource_template("test://items/{id}", name="item")(read_item)
    return registry


def _post(method: str, params: dict[str, Any], **headers: str) -> HttpRequest:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    return HttpRequest("POST", {"content-type": "application/json", **headers}, body)


CASES: list[tuple[str, HttpRequest, OwnerRoute | None]] = [
    ("a legacy session of another node", HttpRequest("GET", {"mcp-session-id": f"{OTHER}.xyz"}),
     OwnerRoute(OTHER, session=True)),
    ("a legacy session of this node", HttpRequest("DELETE", {"mcp-session-id": f"{OWN}.xyz"}), None),
    ("an untagged session id", HttpRequest("POST", {"mcp-session-id": "xyz"}, b"{}"), None),
    ("tasks/get of another node's task", _post("tasks/get", {"taskId": f"{OTHER}.123"}),
     OwnerRoute(OTHER, request_id=7)),
    ("tasks/cancel of this node's task", _post("tasks/cancel", {"taskId": f"{OWN}.123"}), None),
    ("an input round whose state another node signed", _post("tools/call", {
        "name": "plain", "arguments": {"text": "x"}, "requestState": f"{OTHER}.body.mac"}),
     OwnerRoute(OTHER, request_id=7)),
    ("a task tool by task id", _post("tools/call", {"name": "task_tool", "arguments": {"task_id": f"{OTHER}.1"}}),
     OwnerRoute(OTHER, request_id=7)),
    ("a task tool naming its node", _post("tools/call", {"name": "task_tool",
                                                         "arguments": {"task_id": f"{OWN}.1", "peer": PEER}}),
     OwnerRoute(owner_tag(PEER), peer=PEER, request_id=7)),
    ("a peer argument that does not name the serving node", _post(
        "tools/call", {"name": "plain", "arguments": {"text": '"task_id"', "peer": PEER}}), None),
    ("an unknown tool", _post("tools/call", {"name": "nope", "arguments": {"task_id": f"{OTHER}.1"}}), None),
    ("a body that is not JSON", HttpRequest("POST", {}, b'{"taskId": '), None),
    ("a batch", HttpRequest("POST", {}, json.dumps([{"method": "tasks/get", "params": {
        "taskId": f"{OTHER}.1"}}]).encode()), None),
    ("a resource whose template names its node", _post("resources/read", {"uri": f"test://tasks/{OTHER}.1"}),
     OwnerRoute(OTHER, request_id=7)),
    ("a resource of a template without an owner", _post("resources/read", {"uri": f"test://items/{OTHER}.1"}),
     None),
    ("nothing that names a node", _post("tools/call", {"name": "plain", "arguments": {"text": "x"}}), None),
]


@pytest.mark.parametrize(("case", "request_", "route"), CASES, ids=[c[0] for c in CASES])
def test_the_route_of_a_request(case: str, request_: HttpRequest, route: OwnerRoute | None) -> None:
    assert owner_named(request_, own_tag=OWN, registry=_registry()) == route


def test_a_node_without_a_tag_routes_nothing() -> None:
    request = HttpRequest("GET", {"mcp-session-id": f"{OTHER}.xyz"})
    assert owner_named(request, own_tag="", registry=_registry()) is None


def test_ids_and_states_carry_the_tag_and_stay_verifiable() -> None:
    tag = owner_tag(PEER)
    assert len(tag) == 8 and tag_of(tagged(tag, "rest")) == tag and tag_of("rest") is None
    assert tag_of("ABCDEFGH.x") is None and tag_of(None) is None
    signer = RequestStateSigner(b"k" * 32, owner_tag=tag)
    token = signer.sign({"m": "tools/call"}, now=100.0)
    assert tag_of(token) == tag
    assert signer.verify(token, {"m": "tools/call"}, now=101.0)["m"] == "tools/call"
    untagged = RequestStateSigner(b"k" * 32).sign({"m": "tools/call"}, now=100.0)
    assert tag_of(untagged) is None and signer.verify(untagged, {}, now=101.0)["m"] == "tools/call"


def _modern_post(method: str, params: dict[str, Any], name: str | None) -> HttpRequest:
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": method, "accept": "application/json"}
    if name is not None:
        headers["mcp-name"] = name
    return _post(method, {**params, "_meta": modern_meta()}, **headers)


HEADER_CASES: list[tuple[str, HttpRequest, OwnerRoute | None, bool]] = [
    # (case, request, route, whether the body had to be parsed)
    ("a plain tool whose arguments hold routing keys", _modern_post(
        "tools/call", {"name": "plain", "arguments": {"text": '"task_id" "uri"', "peer": PEER}}, "plain"), None, False),
    ("tasks/get of this node's task", _modern_post("tasks/get", {"taskId": f"{OWN}.1"}, f"{OWN}.1"), None, False),
    ("tasks/get of another node's task: parsed, for the id", _modern_post(
        "tasks/get", {"taskId": f"{OTHER}.1"}, f"{OTHER}.1"), OwnerRoute(OTHER, request_id=7), True),
    ("a resource of a template without an owner", _modern_post(
        "resources/read", {"uri": f"test://items/{OTHER}.1"}, f"test://items/{OTHER}.1"), None, False),
    ("a tool that names nodes in its arguments", _modern_post(
        "tools/call", {"name": "task_tool", "arguments": {"task_id": f"{OTHER}.1"}}, "task_tool"),
     OwnerRoute(OTHER, request_id=7), True),
    ("an input round", _modern_post("tools/call", {"name": "plain", "arguments": {"text": "x"},
                                                   "requestState": f"{OTHER}.body.mac"}, "plain"),
     OwnerRoute(OTHER, request_id=7), True),
    ("no routing headers: the body decides", _post("tools/call", {"name": "plain", "arguments": {"text": "x",
                                                                                                "peer": PEER}}),
     None, True),
]


@pytest.mark.parametrize(("case", "request_", "expected", "parsed"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_modern_routing_headers_spare_the_parse_and_a_parsed_body_is_handed_on(
        case: str, request_: HttpRequest, expected: OwnerRoute | None, parsed: bool) -> None:
    named, handed = route(request_, own_tag=OWN, registry=_registry())
    assert named == expected
    if parsed:
        assert handed.decoded == json.loads(request_.body)
    else:
        assert handed is request_ and handed.decoded is NOT_DECODED


def test_a_routing_header_that_lies_is_refused_where_the_request_lands() -> None:
    """Headers naming a local tool over a body naming another node's task: served here, refused."""
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tasks/get",
                       "params": {"taskId": f"{OTHER}.1", "_meta": modern_meta()}}).encode()
    headers = {"content-type": "application/json", "accept": "application/json",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "plain"}
    request_ = HttpRequest("POST", headers, body)
    engine = Engine(_registry(), EngineConfig(owner_tag=OWN))
    named, handed = engine.route(request_)
    assert named is None and handed is request_
    reply = engine.handle(handed)
    assert isinstance(reply, Reply) and reply.status == 400 and reply.body["error"]["code"] == -32020


def test_the_engine_reads_a_body_routing_decoded_instead_of_parsing_it_again() -> None:
    obj = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": modern_meta()}}
    headers = {"content-type": "application/json", "accept": "application/json",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    engine = Engine(_registry(), EngineConfig(owner_tag=OWN))
    reply = engine.handle(HttpRequest("POST", headers, b"not parsed again", decoded=obj))
    assert isinstance(reply, Reply) and reply.status == 200 and reply.body["id"] == 3
