"""The admission table of MCP streams (``triomcp.p2p.admit``), tested directly: synchronous, no
streams, no Trio (like h11's ``test_state.py``). One row per rule of the module docstring."""

from __future__ import annotations

from typing import Any

import pytest

from triomcp import errors
from triomcp.p2p.admit import CANCELLED, Answer, Cancel, Decision, Deliver, Drop, Run, admit, error_message
from triomcp.p2p.framing import FrameIssue

PEER = "12D3KooWPeer"
REQUEST = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1}}


def cancel(target: Any, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": CANCELLED, "params": {"requestId": target}, **extra}


def refused(ident: Any, code: int, message: str) -> Answer:
    return Answer({"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}})


class Budget:
    """A request budget with ``tokens`` left; counts the tokens taken."""

    def __init__(self, tokens: int, rate: float = 0.5) -> None:
        self.tokens = tokens
        self.rate = rate
        self.taken = 0

    def take(self) -> bool:
        if self.tokens < 1:
            return False
        self.tokens -= 1
        self.taken += 1
        return True


BAD_REQUEST = errors.InvalidRequest.jsonrpc_code
ONLY = "peers may only send requests and notifications"
BAD_ID = "id must be a string or an integer"

TABLE: list[tuple[str, dict[str, Any] | FrameIssue, dict[str, Any], Decision]] = [
    ("a skipped frame", FrameIssue(-32700, "frame is not valid JSON"), {},
     Answer(error_message(None, -32700, "frame is not valid JSON"), frame_error=True)),
    ("a skipped frame, from anyone", FrameIssue(-32600, "too big"), {"authorized": False},
     Answer(error_message(None, -32600, "too big"), frame_error=True)),
    ("a response", {"jsonrpc": "2.0", "id": 7, "result": {}}, {}, refused(7, BAD_REQUEST, ONLY)),
    ("a response with an unhashable id", {"jsonrpc": "2.0", "id": [7], "result": {}}, {},
     refused(None, BAD_REQUEST, ONLY)),
    ("a response from an unauthorized peer", {"id": 7, "error": {}}, {"authorized": False},
     refused(7, BAD_REQUEST, ONLY)),
    ("a request from an unauthorized peer", REQUEST, {"authorized": False},
     refused(7, -32001, f"not authorized: peer {PEER} is not in authorized_peers")),
    ("a notification from an unauthorized peer", NOTE, {"authorized": False},
     Drop("a notification from a peer that is not authorized")),
    ("a cancel from an unauthorized peer", cancel(7), {"authorized": False, "inflight": {7}},
     Drop("a notification from a peer that is not authorized")),
    ("a cancel of a request in flight", cancel(7), {"inflight": {7}}, Cancel(7)),
    ("a cancel of a string id in flight", cancel("a"), {"inflight": {"a"}}, Cancel("a")),
    ("a cancel of no request in flight", cancel(8), {"inflight": {7}}, Drop("a cancel for no request in flight")),
    ("a cancel with an unhashable requestId", cancel([7]), {"inflight": {7}},
     Drop("a cancel for no request in flight")),
    ("a cancel without params", {"jsonrpc": "2.0", "method": CANCELLED}, {"inflight": {7}},
     Drop("a cancel for no request in flight")),
    ("a cancel with params not an object", {"method": CANCELLED, "params": [7]}, {"inflight": {7}},
     Drop("a cancel for no request in flight")),
    ("a cancel carrying an id is a request", cancel(7, id=3), {"inflight": {7}}, Run(3, cancel(7, id=3))),
    ("a notification", NOTE, {}, Deliver(NOTE)),
    ("a boolean id", {"jsonrpc": "2.0", "id": True, "method": "x"}, {}, refused(None, BAD_REQUEST, BAD_ID)),
    ("a null id", {"jsonrpc": "2.0", "id": None, "method": "x"}, {}, refused(None, BAD_REQUEST, BAD_ID)),
    ("a float id", {"jsonrpc": "2.0", "id": 1.5, "method": "x"}, {}, refused(None, BAD_REQUEST, BAD_ID)),
    ("an object id", {"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}, {}, refused(None, BAD_REQUEST, BAD_ID)),
    ("an id already in flight", REQUEST, {"inflight": {7}},
     refused(7, BAD_REQUEST, "request id 7 is already in flight")),
    ("the cap on requests in flight", REQUEST, {"inflight": {1, 2}, "max_inflight": 2},
     refused(7, -32010, "too many requests in flight (limit 2)")),
    ("the budget spent", REQUEST, {"budget": Budget(0)}, refused(7, -32010, "too many requests (limit 0.5/s per peer)")),
    ("a request", REQUEST, {"budget": Budget(1)}, Run(7, REQUEST)),
    ("a request with a string id", {**REQUEST, "id": "x"}, {"inflight": {7}}, Run("x", {**REQUEST, "id": "x"})),
    ("a request below the cap", REQUEST, {"inflight": {1}, "max_inflight": 2}, Run(7, REQUEST)),
]


@pytest.mark.parametrize(("item", "state", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_admission_table(item: dict[str, Any] | FrameIssue, state: dict[str, Any], expected: Decision) -> None:
    kwargs: dict[str, Any] = {"peer_id": PEER, "authorized": True, "inflight": set(), "max_inflight": 64, **state}
    assert admit(item, **kwargs) == expected


def test_a_token_is_taken_only_for_a_request_that_runs() -> None:
    budget = Budget(5)
    refused: list[tuple[dict[str, Any], set[Any]]] = [
        (REQUEST, {7}), (NOTE, set()), (cancel(7), {7}), ({"id": True, "method": "x"}, set()),
        ({"id": 7, "result": {}}, set()),
    ]
    for item, inflight in refused:
        admit(item, peer_id=PEER, authorized=True, inflight=inflight, max_inflight=64, budget=budget)
    admit(REQUEST, peer_id=PEER, authorized=True, inflight={1}, max_inflight=1, budget=budget)
    admit(REQUEST, peer_id=PEER, authorized=False, inflight=set(), max_inflight=64, budget=budget)
    assert budget.taken == 0
    assert isinstance(admit(REQUEST, peer_id=PEER, authorized=True, inflight=set(), max_inflight=64, budget=budget), Run)
    assert budget.taken == 1


def test_the_codes_are_the_error_classes_codes() -> None:
    """The wire codes peers see are pinned: -32001 refused, -32010 over a limit."""
    assert errors.NotAuthorized.jsonrpc_code == -32001 and errors.NotAuthorized.code == "not_authorized"
    assert errors.TooManyRequests.jsonrpc_code == -32010 and errors.TooManyRequests.code == "too_many_requests"
    assert errors.InvalidRequest.jsonrpc_code == -32600


def test_error_message_nulls_an_id_that_is_not_a_string_or_an_integer() -> None:
    assert error_message([1], -32600, "x")["id"] is None
    assert error_message("a", -32600, "x") == {"jsonrpc": "2.0", "id": "a", "error": {"code": -32600, "message": "x"}}
