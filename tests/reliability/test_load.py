"""The multi-process load client (:mod:`reliability.load_clients`): real worker processes against
the app under real Hypercorn on 127.0.0.1, their reports merged and checked against the server's own
count of the calls; a worker that dies, or hangs, is an error of its step; the requirement's
verdicts; and ``Retry-After`` honoured by the clients and by wrk's probes (:mod:`reliability.load`):
against an in-memory node (``httpx.MockTransport``, autojump clock), then with the request gate's
one slot held.

Bounded: a run lasts its ``seconds`` plus the workers' start, inside ``trio.fail_after``; no sleeps.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from reliability import load, load_clients
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


SERVICE = 0.1
"""Seconds the in-memory node takes to serve a request (it refuses at once)."""


class Node:
    """An MCP node in memory for ``httpx.MockTransport``: it refuses its first ``refusals`` requests
    (503, -32010, ``Retry-After: retry_after``) and serves the rest in :data:`SERVICE` seconds, a
    legacy session's as well; ``times`` holds when each request came (the Trio clock)."""

    def __init__(self, refusals: int, retry_after: str) -> None:
        self.refusals, self.retry_after = refusals, retry_after
        self.times: list[float] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        if len(self.times) <= self.refusals:
            return httpx.Response(503, headers={"retry-after": self.retry_after}, json={
                "jsonrpc": "2.0", "id": None, "error": {"code": -32010, "message": "overloaded"}})
        await trio.sleep(SERVICE)
        if request.method == "DELETE":
            return httpx.Response(200)
        body = json.loads(request.content)
        if "id" not in body:  # notifications/initialized
            return httpx.Response(202)
        headers = {"mcp-session-id": "s1"} if body["method"] == "initialize" else {}
        return httpx.Response(200, headers=headers, json={"jsonrpc": "2.0", "id": body["id"], "result": {}})

    def gaps(self) -> list[float]:
        return [round(b - a, 3) for a, b in zip(self.times, self.times[1:], strict=False)]


@pytest.mark.parametrize(("first", "refused_what"), [(0, "modern call"), (1, "initialize")])
async def test_a_refused_client_waits_its_retry_after_before_its_next_request(
        autojump_clock: trio.testing.MockClock, first: int, refused_what: str) -> None:
    node = Node(refusals=2, retry_after="2")
    tally = await load_clients.run_clients("http://node", first, 1, 10.0, transport=httpx.MockTransport(node.handle))
    assert node.gaps()[:3] == [2.0, 2.0, SERVICE]  # two refusals waited out, then one call after another
    assert tally.refused_by == {refused_what: 2} and len(tally.refused) == 2 and tally.waited == 4.0
    assert all(latency < 1 for latency in tally.refused)  # a refusal's latency is its own, not the wait
    assert tally.errors == {} and tally.timeouts == {}
    if load_clients.era_of(first) == "legacy":
        assert tally.sessions_opened == tally.sessions_closed == 1 and tally.served["legacy"]
    else:
        assert len(tally.served["modern"]) == len(node.times) - 2


async def test_a_client_waits_at_most_five_seconds_and_never_past_the_steps_end(
        autojump_clock: trio.testing.MockClock) -> None:
    node = Node(refusals=1000, retry_after="3600")
    tally = await load_clients.run_clients("http://node", 0, 1, 12.0, transport=httpx.MockTransport(node.handle))
    assert node.gaps() == [5.0, 5.0]  # the last wait ends with the step: nothing more is sent
    assert tally.waited == 12.0 and tally.calls["modern"] == len(tally.refused) == 3


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
