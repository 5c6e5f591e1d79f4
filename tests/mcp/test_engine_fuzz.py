"""Property-based tests: whatever arrives, the engine answers in spec shape and never crashes.

Bounded (a few hundred examples each) so `make test` stays fast; `make reliability` can raise
the counts with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tests.mcp.helpers import ACCEPT, Recorder, initialize, make_engine, meta
from triomcp.mcp.outcomes import Call, HttpRequest, Listen, Reply, StreamGrant
from triomcp.mcp.versions import SUPPORTED_VERSIONS

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ENGINE = make_engine()
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/read", "resources/list",
           "prompts/get", "completion/complete", "server/discover", "subscriptions/listen",
           "logging/setLevel", "notifications/initialized", "notifications/cancelled", "nope"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def drive(outcome: Any) -> None:
    """Check the outcome's shape; run handlers that complete without suspending."""
    if isinstance(outcome, Reply):
        assert 200 <= outcome.status < 500, outcome
        if outcome.body is not None:
            bodies = outcome.body if isinstance(outcome.body, list) else [outcome.body]
            for body in bodies:
                assert body["jsonrpc"] == "2.0" and ("result" in body) != ("error" in body)
                if "error" in body:
                    assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
        return
    if isinstance(outcome, Call):
        coro = outcome.run(Recorder(answers=[{"action": "cancel"}] * 4))
        try:
            coro.send(None)
        except StopIteration as done:
            response = done.value
            assert response["jsonrpc"] == "2.0" and response["id"] == outcome.request_id
            return
        coro.close()  # the handler suspended (it waits on I/O): shape checked up to here
        return
    assert isinstance(outcome, (StreamGrant, Listen))


@given(body=st.binary(max_size=300))
def test_any_bytes(body: bytes) -> None:
    drive(ENGINE.handle(HttpRequest("POST", {"content-type": "application/json", "accept": ACCEPT}, body)))


@given(value=json_values)
def test_any_json_value(value: Any) -> None:
    drive(ENGINE.handle(HttpRequest("POST", {"content-type": "application/json", "accept": ACCEPT},
                                    json.dumps(value).encode())))


@given(
    method=st.sampled_from(METHODS),
    ident=st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans(), st.floats(allow_nan=False)),
    params=st.one_of(st.none(), json_values, st.fixed_dictionaries(
        {"_meta": st.one_of(st.just(meta()), json_values)},
        optional={"name": st.sampled_from(["echo", "fail", "crash", "media", "nope"]),
                  "arguments": json_values, "uri": st.text(max_size=20), "cursor": st.text(max_size=8)})),
    version=st.one_of(st.none(), st.sampled_from([*SUPPORTED_VERSIONS, "2099-01-01", ""])),
    header_method=st.one_of(st.none(), st.sampled_from(METHODS)),
    name_header=st.one_of(st.none(), st.sampled_from(["echo", "=?base64?ZWNobw==?=", "=?base64?!!?=", ""])),
    session=st.sampled_from([None, "bogus", "live"]),
)
def test_mutated_requests(method: str, ident: Any, params: Any, version: str | None, header_method: str | None,
                          name_header: str | None, session: str | None) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if ident is not None:
        body["id"] = ident
    if params is not None:
        body["params"] = params
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if version is not None:
        headers["mcp-protocol-version"] = version
    if header_method is not None:
        headers["mcp-method"] = header_method
    if name_header is not None:
        headers["mcp-name"] = name_header
    if session == "live":
        headers["mcp-session-id"] = initialize(ENGINE)
    elif session is not None:
        headers["mcp-session-id"] = session
    drive(ENGINE.handle(HttpRequest("POST", headers, json.dumps(body).encode())))


@given(depth=st.integers(min_value=1, max_value=3000), width=st.integers(min_value=0, max_value=3))
def test_deeply_nested_params(depth: int, width: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + nested + "}}").encode()
    drive(ENGINE.handle(HttpRequest("POST", {"content-type": "application/json", "accept": ACCEPT}, raw)))


class LegacySessions(RuleBasedStateMachine):
    """Random sequences of session operations keep the lifecycle rules."""

    live = Bundle("live")

    def __init__(self) -> None:
        super().__init__()
        self.engine = make_engine()
        self.ended: list[str] = []

    @rule(target=live, version=st.sampled_from(["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]))
    def open(self, version: str) -> str:
        return initialize(self.engine, version)

    @rule(sid=live, method=st.sampled_from(["ping", "tools/list", "resources/list", "nope"]),
          ident=st.integers(min_value=0, max_value=3))
    def request(self, sid: str, method: str, ident: int) -> None:
        version = self.engine.sessions.get(sid, principal=None, now=self.engine.clock()).protocol_version
        outcome = self.engine.handle(HttpRequest("POST", {
            "content-type": "application/json", "accept": ACCEPT, "mcp-session-id": sid,
            "mcp-protocol-version": version}, json.dumps({"jsonrpc": "2.0", "id": ident, "method": method}).encode()))
        assert isinstance(outcome, Reply) and outcome.status == 200 and outcome.body["id"] == ident

    @rule(sid=consumes(live))
    def delete(self, sid: str) -> None:
        reply = self.engine.handle(HttpRequest("DELETE", {"mcp-session-id": sid}))
        assert isinstance(reply, Reply) and reply.status == 200
        self.ended.append(sid)

    @rule()
    def use_an_ended_session(self) -> None:
        for sid in self.ended[-3:]:
            reply = self.engine.handle(HttpRequest("POST", {
                "content-type": "application/json", "accept": ACCEPT, "mcp-session-id": sid},
                b'{"jsonrpc":"2.0","id":1,"method":"ping"}'))
            assert isinstance(reply, Reply) and reply.status == 404

    @invariant()
    def ended_sessions_are_gone(self) -> None:
        live_ids = {s.id for s in self.engine.sessions.sessions()}
        assert not live_ids & set(self.ended)


TestLegacySessions = LegacySessions.TestCase
TestLegacySessions.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
