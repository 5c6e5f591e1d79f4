"""The multi-process load client (:mod:`reliability.load_clients`): real worker processes against
the app under real Hypercorn on 127.0.0.1, their reports merged and checked against the server's own
count of the calls; a worker that dies, or hangs, is an error of its step; the requirement's
verdicts; and ``Retry-After`` honoured by the clients and by wrk's probes (:mod:`reliability.load`).
One client against a scripted node on 127.0.0.1 (:class:`Node`: ``trio.serve_tcp`` and h11, a mock
clock that jumps once the loop has idled 20 ms): what each era sends, the legacy session's set-up
and closing, Retry-After, answers that are errors by kind, timeouts, lost and closed connections,
event-stream answers (the client is :mod:`reliability.http1`); then with the real request gate's
one slot held.

Bounded: a run lasts its ``seconds`` plus the workers' start, inside ``trio.fail_after``; no sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import email.utils
import functools
import itertools
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import pytest
import trio
import trio.testing

from harness.mcp_http import INITIALIZED, initialize, legacy_headers, modern_call, tool_call
from reliability import http1, load, load_clients
from tests.conftest import run_app
from tests.server.test_admission import clients, hold
from tests.toolkit import GATES

SECONDS = 2.0
BOUND = 90.0
"""Most seconds a run may take: the workers' start (imports) on a loaded 2-core machine, then SECONDS."""


def served_by_the_server(app: Any, era: str) -> float:
    """The server's own count of ``server_status`` calls of ``era`` that ended ok."""
    value = app.state.services.metrics.sample(
        "triomcp_mcp_tool_calls_total", {"tool": "server_status", "era": era, "outcome": "ok"})
    return float(value or 0)


@pytest.mark.slow
async def test_workers_of_both_eras_are_merged_and_agree_with_the_server(app_factory: Callable[..., Any]) -> None:
    app = app_factory()
    async with run_app(app) as url:
        with trio.fail_after(BOUND):
            step = await load_clients.run_processes(url, 10, SECONDS, processes=2)
        served_modern, served_legacy = served_by_the_server(app, "modern"), served_by_the_server(app, "legacy")
    assert step["errors"] == 0 and step["timeouts"] == 0, (step["errors_by_kind"], step["timeouts_by_kind"])
    assert step["processes"] == 2 and step["workers_reported"] == 2 and step["workers_failed"] == []
    assert (step["modern_clients"], step["legacy_clients"]) == (5, 5)
    calls = step["calls_by_era"]
    assert calls["modern"] > 0 and calls["legacy"] > 0
    assert step["refused_503"] == 0 and step["calls"] == calls["modern"] + calls["legacy"] == step["served"]
    # What the clients counted as served is what the server counted as answered: real calls, all reported.
    assert step["served_by_era"] == {"modern": served_modern, "legacy": served_legacy}
    assert step["sessions_opened"] == step["sessions_closed"] == 5
    assert 0 < step["p50_ms"] <= step["p99_ms"]
    assert all(step["p50_ms_by_era"][era] is not None for era in load_clients.ERAS)
    assert step["served_per_s"] == round(step["served"] / SECONDS, 1)
    assert step["client_cpu_s"] > 0 and step["client_cores"] is not None
    assert SECONDS <= step["wall_s"] < SECONDS + 10


@pytest.mark.slow
async def test_deliberate_refusals_are_counted_apart_not_as_errors(app_factory: Callable[..., Any]) -> None:
    # One slot, none kept for other principals, no wait: ten clients calling at once are refused often.
    app = app_factory(http={"max_calls_in_flight": 1, "max_calls_in_flight_per_principal": 1, "admission_wait": 0})
    async with run_app(app) as url:
        with trio.fail_after(BOUND):
            step = await load_clients.run_processes(url, 10, SECONDS, processes=2)
        served_modern, served_legacy = served_by_the_server(app, "modern"), served_by_the_server(app, "legacy")
    assert step["errors"] == 0 and step["timeouts"] == 0, (step["errors_by_kind"], step["timeouts_by_kind"])
    assert step["refused_503"] > 0 and step["refusal_p50_ms"] is not None
    assert set(step["refused_by_kind"]) <= {"modern call", "legacy call", "initialize", "initialized", "close-session"}
    calls = sum(n for what, n in step["refused_by_kind"].items() if what.endswith(" call"))
    assert step["calls"] == step["served"] + calls
    assert step["served_by_era"] == {"modern": served_modern, "legacy": served_legacy}
    assert served_modern > 0 and served_legacy > 0
    [judged] = load_clients.judge([step])
    assert judged["below_capacity"] is False and judged["refusal_p99_within_100ms"] is not None


async def _step_with(url: str, fault: signal.Signals, result: dict[str, Any], **options: Any) -> None:
    """A 10-client run in 2 processes whose first worker gets ``fault`` as soon as it is told to go."""

    async def step(task_status: trio.TaskStatus[list[int]]) -> None:
        result.update(await load_clients.run_processes(url, 10, SECONDS, processes=2, task_status=task_status, **options))

    async with trio.open_nursery() as nursery:
        pids = await nursery.start(step)
        os.kill(pids[0], fault)


@pytest.mark.slow
async def test_a_worker_that_dies_is_an_error_of_its_step(app_factory: Callable[..., Any]) -> None:
    result: dict[str, Any] = {}
    async with run_app(app_factory()) as url:
        with trio.fail_after(BOUND):
            await _step_with(url, signal.SIGKILL, result)
    assert result["workers_reported"] == 1
    [failed] = result["workers_failed"]
    assert (failed["worker"], failed["clients"], failed["why"]) == (0, 5, "killed by SIGKILL without a report")
    assert result["errors_by_kind"] == {"worker killed by SIGKILL without a report": 1} and result["errors"] == 1
    # The other worker's clients (5 to 9: both eras) are still counted.
    assert result["calls_by_era"]["modern"] > 0 and result["calls_by_era"]["legacy"] > 0
    [judged] = load_clients.judge([result])
    assert judged["ok"] is False


@pytest.mark.slow
async def test_a_worker_that_hangs_is_killed_after_the_grace_and_is_an_error(app_factory: Callable[..., Any]) -> None:
    result: dict[str, Any] = {}
    async with run_app(app_factory()) as url:
        with trio.fail_after(BOUND):
            await _step_with(url, signal.SIGSTOP, result, grace=1.0)
    assert result["workers_reported"] == 1
    [failed] = result["workers_failed"]
    assert failed["worker"] == 0 and failed["why"] == f"still running {SECONDS + 1.0:g} s after go: killed"
    assert result["errors_by_kind"] == {f"worker {failed['why']}": 1}
    assert result["wall_s"] < SECONDS + 1.0 + 1  # killed at the deadline, not waited for


def test_processes_cover_every_core_and_hold_at_most_100_clients_each() -> None:
    assert [load_clients.process_count(c, cpus=2) for c in (1, 10, 200, 201, 400, 1600)] == [1, 2, 2, 3, 4, 16]
    assert load_clients.process_count(40, cpus=8) == 8
    assert load_clients.shares(10, 3) == [4, 3, 3] and sum(load_clients.shares(1601, 16)) == 1601
    with pytest.raises(ValueError):
        load_clients.shares(2, 3)


def _step(p50: float | None, p99: float | None, refused: int = 0, refusal_p99: float | None = None,
          errors: int = 0, timeouts: int = 0) -> dict[str, Any]:
    return {"p50_ms": p50, "p99_ms": p99, "refused_503": refused, "refusal_p99_ms": refusal_p99, "errors": errors,
            "timeouts": timeouts, "modern_clients": 1, "legacy_clients": 1, "served_by_era": {"modern": 1, "legacy": 1}}


def test_the_verdicts_are_the_requirements() -> None:
    steps = load_clients.judge([
        _step(100, 250),  # below capacity, tail within 3 x p50
        _step(200, 700),  # below capacity, tail past it
        _step(300, 550, refused=5, refusal_p99=80),  # past capacity: fast refusals, p99 <= 3 x 200 ms
        _step(300, 650, refused=5, refusal_p99=80),  # served latency not kept (650 > 600)
        _step(300, 550, refused=5, refusal_p99=150),  # refusals too slow
        _step(100, 150, timeouts=1),  # a timeout fails a step whatever its latencies
    ])
    assert [s["ok"] for s in steps] == [True, False, True, False, False, False]
    assert [s["below_capacity"] for s in steps] == [True, True, False, False, False, True]
    assert steps[2]["reference_p50_ms"] == 200 and steps[2]["refusal_p99_within_100ms"] is True
    assert steps[3]["served_latency_kept"] is False and steps[4]["refusal_p99_within_100ms"] is False
    assert steps[0]["refusal_p99_within_100ms"] is None  # below capacity: no refusals to time
    [alone] = load_clients.judge([_step(300, 800, refused=5, refusal_p99=50)])  # no step below: its own p50
    assert alone["reference_p50_ms"] == 300 and alone["ok"] is True
    [unserved] = load_clients.judge([{**_step(100, 200), "served_by_era": {"modern": 3, "legacy": 0}}])
    assert unserved["ok"] is False  # an era with clients and no served call


# -- Retry-After -------------------------------------------------------------------------------------


def test_a_client_waits_what_retry_after_says_within_bounds() -> None:
    wait = load.retry_after_wait
    assert wait("1", 10) == 1 and wait(" 2 ", 10) == 2
    assert wait(None, 10) == wait("soon", 10) == wait("-3", 10) == load.RETRY_AFTER_DEFAULT
    assert wait("3600", 10) == load.RETRY_AFTER_BOUND  # whatever it says, at most 5 s
    assert wait("2", 0.3) == 0.3 and wait("2", -1) == 0  # never past the step's end
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    assert 1.5 < wait(email.utils.format_datetime(later, usegmt=True), 10) <= 3
    assert wait("Sun, 06 Nov 1994 08:49:37 GMT", 10) == 0  # a date gone by: at once


SERVICE = 0.125
"""Seconds the scripted node takes to serve a request (it refuses at once); a binary fraction, so
that the mock clock's times add up exactly (eight calls in a second, not nine and a bit)."""


@pytest.fixture
def io_clock() -> trio.testing.MockClock:
    """A clock that jumps to the next deadline once the loop has been idle for 20 ms of real time,
    so the clients' and the node's socket I/O (microseconds on 127.0.0.1) happens before any jump."""
    return trio.testing.MockClock(autojump_threshold=0.02)


@dataclasses.dataclass
class Seen:
    """A request the scripted node read: its method, headers (lower-case names), JSON body (or
    None), when it came (the Trio clock) and on which of the node's connections (1, 2, ...)."""

    method: str
    headers: dict[str, str]
    body: Any
    at: float
    connection: int

    @property
    def rpc(self) -> str:
        return "DELETE" if self.body is None else str(self.body["method"])


@dataclasses.dataclass
class Answer:
    """What the scripted node does with a request: answer ``status`` (``close``: with
    ``connection: close``, or closing the connection ``silently`` after the answer), or ``drop``
    the connection without an answer, or ``hang`` for ever."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    close: str | None = None
    drop: bool = False
    hang: bool = False
    at_once: bool = False
    """Answered without the :data:`SERVICE` time (a refusal)."""


def jsonrpc_answer(status: int, message: dict[str, Any], **headers: str) -> Answer:
    return Answer(status, {"content-type": "application/json", **headers}, json.dumps(message).encode())


def refusal(retry_after: str) -> Answer:
    answer = jsonrpc_answer(503, {"jsonrpc": "2.0", "id": None, "error": {"code": -32010, "message": "overloaded"}},
                            **{"retry-after": retry_after})
    return dataclasses.replace(answer, at_once=True)


def mcp_answer(seen: Seen) -> Answer:
    """What a node answers a request it serves: 200 to ``DELETE``, 202 to the notification, a
    result to the rest (with the session ``s1`` to ``initialize``)."""
    if seen.body is None:
        return Answer(200)
    if "id" not in seen.body:  # notifications/initialized
        return Answer(202)
    session = {"mcp-session-id": "s1"} if seen.body["method"] == "initialize" else {}
    return jsonrpc_answer(200, {"jsonrpc": "2.0", "id": seen.body["id"], "result": {}}, **session)


Script = Callable[[Seen], Answer]


def refusing(refusals: int, retry_after: str, then: Script = mcp_answer) -> Script:
    """Refuse the first ``refusals`` requests (503, -32010, ``Retry-After: retry_after``), answer
    the rest as ``then`` does."""
    count = itertools.count(1)
    return lambda seen: refusal(retry_after) if next(count) <= refusals else then(seen)


class Node:
    """A scripted MCP node on 127.0.0.1 (``trio.serve_tcp`` and h11): every request it reads is in
    ``requests``, and ``script`` says what it does with it; an answer comes after :data:`SERVICE`
    seconds, a refusal (503, -32010) at once."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Seen] = []
        self.connections = 0
        self.url = ""

    def gaps(self) -> list[float]:
        times = [seen.at for seen in self.requests]
        return [round(b - a, 3) for a, b in itertools.pairwise(times)]

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):  # the client went away
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed: the client closed it
                        return
                assert request is not None
                seen = Seen(request.method.decode(), {k.decode(): v.decode() for k, v in request.headers},
                            json.loads(body) if body else None, trio.current_time(), number)
                self.requests.append(seen)
                answer = self.script(seen)
                if answer.hang:
                    await trio.sleep_forever()
                if not answer.at_once:
                    await trio.sleep(SERVICE)
                if answer.drop:
                    await stream.aclose()
                    return
                headers = {**answer.headers, "content-length": str(len(answer.body))}
                if answer.close == "header":
                    headers["connection"] = "close"
                await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=list(headers.items())))
                                      + conn.send(h11.Data(data=answer.body)) + conn.send(h11.EndOfMessage()))
                if answer.close is not None:
                    await stream.aclose()
                    return
                conn.start_next_cycle()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """The node's base URL, while it serves."""
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
            self.url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
            yield self.url
            nursery.cancel_scope.cancel()


async def run_against(script: Script, first: int, seconds: float, **options: Any) -> tuple[load_clients.Tally, Node]:
    """Client ``first`` (its era: :func:`~reliability.load_clients.era_of`) against a node following ``script``."""
    node = Node(script)
    async with node.serving() as url:
        tally = await load_clients.run_clients(url, first, 1, seconds, **options)
    return tally, node


MODERN, LEGACY = 0, 1
"""The number of a modern client, and of a legacy one."""


async def test_a_modern_client_sends_stateless_calls_of_the_modern_era_on_one_connection(
        io_clock: trio.testing.MockClock) -> None:
    tally, node = await run_against(mcp_answer, MODERN, 1.0)
    headers, _ = modern_call(load_clients.TOOL, {}, 1)
    assert len(node.requests) == 8 and node.connections == tally.connections == 1  # one call per SERVICE
    for n, seen in enumerate(node.requests, 1):
        assert seen.method == "POST" and seen.body == modern_call(load_clients.TOOL, {}, n)[1]  # id n, its _meta
        assert {k: seen.headers[k] for k in headers} == headers and "mcp-session-id" not in seen.headers
        assert seen.headers["host"] == node.url.removeprefix("http://")  # the node checks it
    assert tally.calls == {"modern": 8} and len(tally.served["modern"]) == 8 and tally.served["legacy"] == []
    assert all(latency < 1 for latency in tally.served["modern"])  # real seconds: the mock clock's SERVICE is free
    assert tally.errors == tally.timeouts == tally.refused_by == {} and tally.sessions_opened == 0


async def test_a_legacy_client_opens_a_session_calls_in_it_and_closes_it(io_clock: trio.testing.MockClock) -> None:
    tally, node = await run_against(mcp_answer, LEGACY, 1.0)
    opening, notification, *calls, closing = node.requests
    assert opening.rpc == "initialize" and "mcp-session-id" not in opening.headers
    assert opening.body == initialize(client="load")
    session = legacy_headers("s1")
    for seen in (notification, *calls, closing):
        assert {k: seen.headers[k] for k in session} == session
    assert notification.body == INITIALIZED
    assert [seen.body for seen in calls] == [tool_call(load_clients.TOOL, {}, n) for n in range(1, len(calls) + 1)]
    assert closing.method == "DELETE" and closing.body is None and closing.at >= 1.0  # after the step's end
    assert len(calls) == 6 and tally.calls == {"legacy": 6} and len(tally.served["legacy"]) == 6
    assert tally.sessions_opened == tally.sessions_closed == 1 and node.connections == 1
    assert tally.errors == tally.timeouts == tally.refused_by == {}


@pytest.mark.parametrize(("first", "refused_what"), [(MODERN, "modern call"), (LEGACY, "initialize")])
async def test_a_refused_client_waits_its_retry_after_before_its_next_request(
        io_clock: trio.testing.MockClock, first: int, refused_what: str) -> None:
    tally, node = await run_against(refusing(2, "2"), first, 10.0)
    assert node.gaps()[:3] == [2.0, 2.0, SERVICE]  # two refusals waited out, then one call after another
    assert tally.refused_by == {refused_what: 2} and len(tally.refused) == 2 and tally.waited == 4.0
    assert all(latency < 1 for latency in tally.refused)  # a refusal's latency is its own, not the wait
    assert tally.errors == {} and tally.timeouts == {} and node.connections == 1  # the connection kept
    if load_clients.era_of(first) == "legacy":
        assert tally.sessions_opened == tally.sessions_closed == 1 and tally.served["legacy"]
        assert [seen.rpc for seen in node.requests[:4]] == ["initialize"] * 3 + ["notifications/initialized"]
    else:
        assert len(tally.served["modern"]) == len(node.requests) - 2


async def test_a_client_waits_at_most_five_seconds_and_never_past_the_steps_end(
        io_clock: trio.testing.MockClock) -> None:
    tally, node = await run_against(refusing(1000, "3600"), MODERN, 12.0)
    assert node.gaps() == [5.0, 5.0]  # the last wait ends with the step: nothing more is sent
    assert tally.waited == 12.0 and tally.calls["modern"] == len(tally.refused) == 3


async def test_a_refused_legacy_client_sends_its_closing_again_for_at_most_a_request_timeout(
        io_clock: trio.testing.MockClock) -> None:
    def script(seen: Seen) -> Answer:
        return refusal("1") if seen.method == "DELETE" else mcp_answer(seen)

    tally, node = await run_against(script, LEGACY, 1.0, request_timeout=3.0)
    deletes = [seen.at for seen in node.requests if seen.method == "DELETE"]
    # From the step's end (1 s), a DELETE a second until 1 + request_timeout: the session is left open.
    assert len(deletes) == 3 and deletes[-1] - deletes[0] == 2.0 and tally.refused_by == {"close-session": 3}
    assert tally.sessions_opened == 1 and tally.sessions_closed == 0 and tally.errors == {}


@pytest.mark.parametrize(("answer", "kind"), [
    (jsonrpc_answer(500, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "boom"}}), "500 -32603"),
    (jsonrpc_answer(200, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "no"}}), "200 -32602"),
    (jsonrpc_answer(503, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "down"}}), "503 -32603"),
    (Answer(502, {"content-type": "text/plain"}, b"bad gateway"), "502"),
    (Answer(200, {"content-type": "application/json"}, b"{not json"), "200"),
])
async def test_an_answer_neither_served_nor_refused_is_an_error_of_its_kind(
        io_clock: trio.testing.MockClock, answer: Answer, kind: str) -> None:
    tally, node = await run_against(lambda seen: answer, MODERN, 1.0)
    assert tally.errors == {f"modern call {kind}": 8} and tally.calls == {"modern": 8}
    assert tally.served["modern"] == [] and tally.refused == [] and tally.waited == 0  # a 503 without -32010
    assert node.connections == 1


@pytest.mark.parametrize(("fault", "errors", "opened", "closed", "requests"), [
    # No session id: no session, nothing more sent.
    ("initialize", {"initialize 200": 1}, 0, 0, ["initialize"]),
    # The notification refused: no calls, but the session is closed.
    ("notifications/initialized", {"initialized 400 -32600": 1}, 1, 1,
     ["initialize", "notifications/initialized", "DELETE"]),
    ("DELETE", {"close-session 405": 1}, 1, 0, None),
])
async def test_a_legacy_sessions_set_up_or_closing_that_fails_is_an_error_of_its_kind(
        io_clock: trio.testing.MockClock, fault: str, errors: dict[str, int], opened: int, closed: int,
        requests: list[str] | None) -> None:
    def script(seen: Seen) -> Answer:
        if seen.rpc != fault:
            return mcp_answer(seen)
        if fault == "initialize":
            return jsonrpc_answer(200, {"jsonrpc": "2.0", "id": 0, "result": {}})
        if fault == "DELETE":
            return Answer(405)
        return jsonrpc_answer(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}})

    tally, node = await run_against(script, LEGACY, 1.0)
    assert tally.errors == errors and (tally.sessions_opened, tally.sessions_closed) == (opened, closed)
    if requests is not None:
        assert [seen.rpc for seen in node.requests] == requests and tally.calls == {}
    else:
        assert node.requests[-1].method == "DELETE" and tally.calls["legacy"] > 0


@pytest.mark.parametrize(("first", "what", "timeouts"), [(MODERN, "modern call", 3), (LEGACY, "initialize", 1)])
async def test_a_request_unanswered_after_request_timeout_is_a_timeout_and_its_connection_is_replaced(
        io_clock: trio.testing.MockClock, first: int, what: str, timeouts: int) -> None:
    tally, node = await run_against(lambda seen: Answer(hang=True), first, 25.0)
    # Sent at 0, 10 and 20 s (a legacy client gives up on its session at once), each on a new connection.
    assert [seen.at for seen in node.requests] == [10.0 * n for n in range(timeouts)]
    assert tally.timeouts == {what: timeouts} and tally.errors == {} and tally.served == {"modern": [], "legacy": []}
    assert [seen.connection for seen in node.requests] == list(range(1, timeouts + 1)) and tally.connections == timeouts
    assert tally.calls == ({"modern": 3} if first == MODERN else {})


async def test_a_connection_closed_before_the_answer_is_an_error_and_the_client_reconnects(
        io_clock: trio.testing.MockClock) -> None:
    count = itertools.count(1)
    tally, node = await run_against(lambda seen: Answer(drop=True) if next(count) % 3 == 0 else mcp_answer(seen),
                                    MODERN, 1.0)
    dropped = len(node.requests) // 3
    assert tally.errors == {"modern call RemoteProtocolError": dropped} and dropped >= 2
    assert len(tally.served["modern"]) == tally.calls["modern"] - dropped
    # Requests 1-3 on connection 1, 4-6 on connection 2, ...: the next one after each drop on a new one.
    assert [seen.connection for seen in node.requests] == [1 + i // 3 for i in range(len(node.requests))]


@pytest.mark.parametrize("close", ["header", "silently"])
async def test_a_connection_the_node_closes_after_its_answer_is_replaced_without_an_error(
        io_clock: trio.testing.MockClock, close: str) -> None:
    # Every answer says ``connection: close``; or a refusal, then the connection closed without a word
    # while the client waits its Retry-After.
    count = itertools.count(1)

    def script(seen: Seen) -> Answer:
        if close == "header":
            return dataclasses.replace(mcp_answer(seen), close="header")
        return dataclasses.replace(refusal("1"), close="silently") if next(count) == 1 else mcp_answer(seen)

    tally, node = await run_against(script, MODERN, 2.0)
    assert tally.errors == {} and tally.timeouts == {} and len(tally.served["modern"]) > 0
    connections = [seen.connection for seen in node.requests]
    assert connections == (list(range(1, len(node.requests) + 1)) if close == "header"
                           else [1] + [2] * (len(node.requests) - 1))
    assert tally.connections == node.connections


async def test_a_node_that_cannot_be_reached_gives_connect_errors() -> None:
    with socket.socket() as bound:  # a port nobody listens on: each connect is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with trio.fail_after(10):
            tally = await load_clients.run_clients(url, MODERN, 1, 0.2)
    assert tally.calls["modern"] > 0 and tally.errors == {"modern call ConnectError": tally.calls["modern"]}
    assert tally.timeouts == {} and tally.connections == 0


def event_stream(*messages: dict[str, Any], **headers: str) -> Answer:
    events = b"".join(b"event: message\r\ndata: " + json.dumps(m).encode() + b"\r\n\r\n" for m in messages)
    return Answer(200, {"content-type": "text/event-stream", **headers}, events)


@pytest.mark.parametrize("first", [MODERN, LEGACY])
async def test_an_answer_sent_as_an_event_stream_is_read_from_its_data(
        io_clock: trio.testing.MockClock, first: int) -> None:
    def script(seen: Seen) -> Answer:
        answer = mcp_answer(seen)
        if seen.body is None or "id" not in seen.body:
            return answer
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        return event_stream(progress, json.loads(answer.body),
                            **{k: v for k, v in answer.headers.items() if k == "mcp-session-id"})

    tally, node = await run_against(script, first, 1.0)
    era = load_clients.era_of(first)
    assert tally.errors == {} and len(tally.served[era]) == tally.calls[era] > 0 and node.connections == 1
    assert tally.sessions_opened == tally.sessions_closed == int(first == LEGACY)


def test_an_event_streams_answer_is_its_json_rpc_response() -> None:
    stream = (b": comment\n\nevent: message\ndata: {\"jsonrpc\": \"2.0\", \"method\": \"n\"}\n\n"
              b"id: 7\ndata: {\"jsonrpc\": \"2.0\",\ndata: \"id\": 3, \"result\": {}}\n\n")
    answer = http1.Response(200, {b"content-type": b"text/event-stream"}, stream)
    assert answer.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}  # data lines joined, the notification skipped
    with pytest.raises(ValueError):
        http1.Response(200, {b"content-type": b"text/event-stream"}, b": nothing\n\n").json()
    with pytest.raises(ValueError):
        http1.Response(200, {b"content-type": b"application/json"}, b"").json()
    body = http1.Body(tool_call("t", {}, 0))
    assert json.loads(body.with_id(12345)) == tool_call("t", {}, 12345)


@pytest.mark.slow
async def test_with_the_only_slot_held_clients_and_probes_time_refusals_not_the_pause(
        app_factory: Callable[..., Any]) -> None:
    # One request in progress at most, held by a call; every other request is refused after 50 ms,
    # and a connection that sent its next request at once would wait the 1 s refusal_pause first.
    app = app_factory(http={"max_requests_in_progress": 1, "admission_wait": 0.05, "request_park_after": 30.0,
                            "refusal_pause": 1.0})
    probe: dict[str, list[float]] = {"served": [], "refused": [], "failed": []}
    async with run_app(app) as url, clients(url, "127.0.0.2") as [c]:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                held = await hold(nursery, c, "load", 1)
                async with trio.open_nursery() as both:
                    both.start_soon(trio.to_thread.run_sync, load._probe, url, "127.0.0.1", SECONDS, probe)
                    tally = await load_clients.run_clients(url, 0, 2, SECONDS)  # a modern and a legacy client
                GATES["load"].set()
            assert held[0].status_code == 200
    assert tally.served == {"modern": [], "legacy": []} and tally.errors == {} and tally.timeouts == {}
    assert probe["refused"] and probe["served"] == probe["failed"] == []
    # Each waited its Retry-After (1 s) before its next request, so each refusal took the gate's 50 ms.
    assert max(tally.refused) < 0.5 and max(probe["refused"]) < 0.5, (tally.refused, probe["refused"])
    assert set(tally.refused_by) == {"modern call", "initialize"} and tally.waited >= 2 * 1.0
    assert len(tally.refused) <= 2 * (SECONDS + 1) and len(probe["refused"]) <= SECONDS + 1
