"""Input rounds in the modern era (multi round-trip requests), driven synchronously on the engine.

The handlers are the conformance fixtures of :mod:`triomcp.conformance.mrtr` (project code, with
the inputs the official suite sends) plus the test tools of ``tests.toolkit``.
"""

from __future__ import annotations

from typing import Any

from tests.mcp.helpers import MODERN, check_result, modern, run_sync
from tests.toolkit import register_test_tools
from triomcp.conformance import mrtr
from triomcp.mcp.engine import Engine, EngineConfig
from triomcp.mcp.outcomes import Reply
from triomcp.mcp.registry import Registry

ALL_CAPS = {"elicitation": {}, "sampling": {}, "roots": {}}


def engine() -> Engine:
    registry = Registry()
    register_test_tools(registry)
    mrtr.register(registry)
    return Engine(registry, EngineConfig())


def call(eng: Engine, name: str, *, caps: dict[str, Any] | None = None, ident: int = 1,
         **extra: Any) -> dict[str, Any]:
    out = run_sync(modern(eng, "tools/call", {"name": name, "arguments": {}, **extra},
                          caps=ALL_CAPS if caps is None else caps, ident=ident))
    assert out is not None
    return out


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def text_of(response: dict[str, Any]) -> str:
    return str(response["result"]["content"][0]["text"])


def test_several_requests_in_one_round_each_under_its_own_key() -> None:
    eng = engine()
    first = call(eng, "test_input_required_result_multiple_inputs")["result"]
    assert first["resultType"] == "input_required"
    assert {k: v["method"] for k, v in first["inputRequests"].items()} == {
        "user_name": "elicitation/create", "greeting": "sampling/createMessage", "client_roots": "roots/list"}
    check_result("tools/call", MODERN, first)
    answers = {"user_name": accept(name="Ada"), "client_roots": {"roots": [{"uri": "file:///r"}]},
               "greeting": {"role": "assistant", "content": {"type": "text", "text": "Hi"}, "model": "m"}}
    done = call(eng, "test_input_required_result_multiple_inputs", ident=2, inputResponses=answers,
                requestState=first["requestState"])
    assert done["result"]["resultType"] == "complete"
    assert text_of(done) == "Hi Ada (1 root(s))"


def test_request_state_carries_earlier_answers_to_later_rounds() -> None:
    eng = engine()
    r1 = call(eng, "test_input_required_result_multi_round")["result"]
    assert list(r1["inputRequests"]) == ["step1"]
    r2 = call(eng, "test_input_required_result_multi_round", ident=2, inputResponses={"step1": accept(name="Ada")},
              requestState=r1["requestState"])["result"]
    assert r2["resultType"] == "input_required" and list(r2["inputRequests"]) == ["step2"]
    # Round 3 answers only step2: step1's answer comes back inside the signed state.
    r3 = call(eng, "test_input_required_result_multi_round", ident=3, inputResponses={"step2": accept(color="blue")},
              requestState=r2["requestState"])
    assert text_of(r3) == "Ada likes blue"
    # Without the state, the server has only what this request brings: it asks again for step1.
    again = call(eng, "test_input_required_result_multi_round", ident=4, inputResponses={"step2": accept(color="x")})
    assert list(again["result"]["inputRequests"]) == ["step1"]


def test_input_responses_without_request_state_are_taken_and_extra_keys_ignored() -> None:
    eng = engine()
    done = call(eng, "test_input_required_result_elicitation",
                inputResponses={"user_name": accept(name="Alice"), "unknown": accept(foo=1)})
    assert done["result"]["resultType"] == "complete" and text_of(done) == "Hello, Alice!"
    wrong_key = call(eng, "test_input_required_result_elicitation", inputResponses={"wrong": accept(name="x")})
    assert wrong_key["result"]["resultType"] == "input_required"


def test_a_verified_request_state_is_visible_to_the_handler() -> None:
    eng = engine()
    first = call(eng, "test_input_required_result_request_state")["result"]
    ok = call(eng, "test_input_required_result_request_state", ident=2, inputResponses={"confirm": accept(ok=True)},
              requestState=first["requestState"])
    assert text_of(ok).startswith("state-ok")
    bare = call(eng, "test_input_required_result_request_state", ident=3, inputResponses={"confirm": accept(ok=True)})
    assert not text_of(bare).startswith("state-ok")


def test_tampered_state_and_malformed_answers_are_protocol_errors() -> None:
    eng = engine()
    first = call(eng, "test_input_required_result_tampered_state")["result"]
    tampered = call(eng, "test_input_required_result_tampered_state", ident=2,
                    inputResponses={"confirm": accept(ok=True)}, requestState=first["requestState"] + "-TAMPERED")
    assert tampered["error"]["code"] == -32602
    # A state minted for another tool does not open this one.
    other = call(eng, "test_input_required_result_elicitation", ident=3,
                 inputResponses={"user_name": accept(name="x")}, requestState=first["requestState"])
    assert other["error"]["code"] == -32602 and "does not belong" in other["error"]["message"]
    reply = modern(eng, "tools/call", {"name": "test_input_required_result_elicitation", "arguments": {},
                                       "inputResponses": None}, caps=ALL_CAPS)
    out = reply.body if isinstance(reply, Reply) else run_sync(reply)
    assert out is not None and out["error"]["code"] == -32602


def test_only_requests_the_client_can_answer_are_made() -> None:
    eng = engine()
    sampled = call(eng, "test_input_required_result_capabilities", caps={"sampling": {}})["result"]
    assert [r["method"] for r in sampled["inputRequests"].values()] == ["sampling/createMessage"]
    # A handler that asks for an undeclared capability anyway gets -32021 naming it.
    refused = call(eng, "test_input_required_result_elicitation", caps={"sampling": {}})
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"]["requiredCapabilities"] == {"elicitation": {}}


def test_prompts_ask_for_input_too() -> None:
    eng = engine()
    params = {"name": "test_input_required_result_prompt"}
    first = run_sync(modern(eng, "prompts/get", params, caps=ALL_CAPS))
    assert first is not None and first["result"]["resultType"] == "input_required"
    done = run_sync(modern(eng, "prompts/get", {**params, "inputResponses": {"user_context": accept(context="c")},
                                                "requestState": first["result"]["requestState"]},
                           caps=ALL_CAPS, ident=2))
    assert done is not None and done["result"]["messages"][0]["content"]["text"] == "Use this context: c"
