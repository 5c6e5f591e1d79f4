"""Admission control: past capacity a call is refused at once (503, Retry-After, -32010), fairly
between principals; health, metrics and a task's outcome tools are never refused; a slot comes
back when its call ends, however it ends. And the listener that takes every waiting connection.

The rules are tested on :class:`Admission` directly (Trio, autojump clock); then end to end against
real Hypercorn on 127.0.0.1 with a ``gate`` call holding the budget. No sleeps, every wait bounded.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from harness.mcp_http import modern_call
from tests.conftest import run_app
from tests.helpers.http import meta, modern_headers, open_session, watcher_started
from tests.toolkit import CANCELLED_EVENTS, GATES, STARTED
from triomcp.server.admission import NEVER_REFUSED, Admission, principal_key
from triomcp.server.serving import DrainingListener

# -- the rules ---------------------------------------------------------------------------------


def test_a_principal_may_take_any_free_slot_but_the_reserve_kept_for_the_others() -> None:
    admission = Admission(capacity=4, per_principal=1, wait=0.05)
    for _ in range(3):  # its own share, then two more while more than the reserve is free
        assert admission.enter_nowait("a") is None
    over = admission.enter_nowait("a")  # one slot left: the reserve
    assert over is not None and (over.reason, over.limit) == ("principal", 1)
    assert admission.enter_nowait("b") is None  # b holds none: the reserve is for it
    full = admission.enter_nowait("c")
    assert full is not None and (full.reason, full.limit) == ("capacity", 4)
    admission.leave("a")
    assert admission.enter_nowait("a") is not None and admission.enter_nowait("c") is None
    stats = admission.statistics()
    assert (stats.in_flight, stats.principals, stats.refused_principal, stats.refused_capacity) == (4, 3, 2, 1)


async def test_a_waiting_call_gets_the_next_free_slot_first_come_first_served() -> None:
    admission = Admission(capacity=2, per_principal=10, wait=30.0)  # real clock: nothing waits that long
    assert admission.enter_nowait("holder") is None and admission.enter_nowait("holder") is None
    order: list[str] = []

    async def wait_for_slot(who: str) -> None:
        assert await admission.enter(who) is None
        order.append(who)

    async with trio.open_nursery() as nursery:
        for who in ("first", "second"):
            nursery.start_soon(wait_for_slot, who)
            await trio.testing.wait_all_tasks_blocked()
        assert admission.statistics().waiting == 2
        assert admission.enter_nowait("newcomer") is not None  # no jumping the queue
        refused = await admission.enter("third")  # at most `capacity` wait: refused without waiting
        assert refused is not None and refused.reason == "capacity"
        admission.leave("holder")
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first"]
        admission.leave("holder")
    assert order == ["first", "second"]
    stats = admission.statistics()
    assert (stats.in_flight, stats.waited, stats.refused_capacity) == (2, 2, 2)


async def test_a_call_that_waits_in_vain_is_refused_after_the_wait(autojump_clock: trio.testing.MockClock) -> None:
    admission = Admission(capacity=1, per_principal=10, wait=0.05)
    assert await admission.enter("holder") is None
    start = trio.current_time()
    refusal = await admission.enter("late")
    assert refusal is not None and refusal.reason == "capacity"
    assert trio.current_time() - start == pytest.approx(0.05)
    stats = admission.statistics()
    assert (stats.waiting, stats.principals, stats.refused_capacity) == (0, 1, 1)
    admission.leave("holder")  # nobody is waiting any more: the slot goes back to the pool
    assert admission.statistics().in_flight == 0


async def test_a_waiter_cancelled_while_it_waits_leaves_no_trace() -> None:
    admission = Admission(capacity=1, per_principal=10, wait=30.0)
    assert admission.enter_nowait("holder") is None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admission.enter, "cancelled")
        await trio.testing.wait_all_tasks_blocked()
        assert admission.statistics().waiting == 1
        nursery.cancel_scope.cancel()  # e.g. the server shuts down
    stats = admission.statistics()
    assert (stats.in_flight, stats.waiting, stats.principals) == (1, 0, 1)
    admission.leave("holder")  # nobody waits: back to the pool
    assert admission.statistics().in_flight == 0
    assert admission.enter_nowait("next") is None


def test_principals_are_authenticated_names_else_addresses_else_one_for_a_unix_socket() -> None:
    assert principal_key({"triomcp.principal": "alice", "client": ("10.0.0.1", 5)}) == "principal:alice"
    assert principal_key({"client": ("10.0.0.1", 5)}) == "address:10.0.0.1"
    assert principal_key({"client": ("2001:db8:1:2:3:4:5:6", 5)}) == principal_key({"client": ("2001:db8:1:2::9", 6)})
    assert principal_key({"client": ("2001:db8:1:2::9", 6)}) == "address:2001:db8:1:2::/64"
    assert principal_key({"client": ("::ffff:10.0.0.1", 5)}) == "address:10.0.0.1"
    assert principal_key({"client": None}) == principal_key({}) == "anonymous"


def test_the_outcome_tools_of_a_running_task_are_the_ones_never_refused() -> None:
    assert {"taskqueue_renew", "taskqueue_progress", "taskqueue_complete", "taskqueue_fail",
            "taskqueue_release", "taskqueue_suspend"} == NEVER_REFUSED


# -- end to end ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def clients(url: str, *addresses: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per source address (all of 127.0.0.0/8 is loopback): one principal each."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(
            base_url=url, timeout=10, transport=httpx.AsyncHTTPTransport(local_address=address)))
            for address in addresses]


def call(tool: str, text: str, ident: int) -> dict[str, Any]:
    headers, body = modern_call(tool, {"text": text}, ident)
    return {"headers": headers, "json": body}


async def hold(nursery: trio.Nursery, c: httpx.AsyncClient, tag: str, ident: int) -> list[httpx.Response]:
    """Start a ``gate`` call tagged ``tag`` and return once it runs (it holds a slot till GATES[tag])."""
    STARTED[tag], GATES[tag] = trio.Event(), trio.Event()
    answers: list[httpx.Response] = []

    async def run() -> None:
        answers.append(await c.post("/mcp", **call("gate", tag, ident)))

    nursery.start_soon(run)
    await STARTED[tag].wait()
    return answers


async def test_past_capacity_a_call_is_refused_at_once_and_health_and_metrics_still_answer(
        app_factory: Any) -> None:
    app = app_factory(http={"max_calls_in_flight": 1, "admission_wait": 0.05})
    async with run_app(app) as url, clients(url, "127.0.0.1") as [c]:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                held = await hold(nursery, c, "full", 1)
                start = trio.current_time()
                r = await c.post("/mcp", **call("echo", "refused", 2))
                waited = trio.current_time() - start
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                error = r.json()["error"]
                assert r.json()["id"] == 2 and error["code"] == -32010
                assert error["data"] == {"reason": "capacity", "limit": 1}
                assert "http.max_calls_in_flight" in error["message"]
                assert waited < 2.0  # the refusal did not wait for the gate: it is still shut
                assert not held
                assert (await c.get("/healthz")).status_code == 200
                assert (await c.get("/readyz")).status_code == 200
                metrics = (await c.get("/metrics")).text
                assert 'triomcp_http_calls_refused_total{reason="capacity"} 1.0' in metrics
                assert "triomcp_http_calls_in_flight 1.0" in metrics
                GATES["full"].set()
            assert held[0].status_code == 200 and held[0].json()["result"]["structuredContent"]["text"] == "full"


async def test_a_flooding_principal_is_refused_while_another_is_served(app_factory: Any) -> None:
    app = app_factory(http={"max_calls_in_flight": 4, "max_calls_in_flight_per_principal": 1})
    async with run_app(app) as url, clients(url, "127.0.0.1", "127.0.0.2") as [flood, calm]:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for k in range(3):  # the flood takes all but the reserve, with calls that do not end
                    await hold(nursery, flood, f"flood-{k}", k)
                r = await flood.post("/mcp", **call("echo", "fourth", 9))
                assert r.status_code == 503 and r.json()["error"]["data"] == {"reason": "principal", "limit": 1}
                served = await calm.post("/mcp", **call("echo", "calm", 10))
                assert served.status_code == 200 and served.json()["result"]["structuredContent"]["text"] == "calm"
                for k in range(3):
                    GATES[f"flood-{k}"].set()
    stats = app.state.services.admission.statistics()
    assert (stats.refused_principal, stats.refused_capacity) == (1, 0)


async def test_a_slot_is_given_back_when_its_call_completes(app_factory: Any) -> None:
    app = app_factory(http={"max_calls_in_flight": 1, "admission_wait": 30.0})
    async with run_app(app) as url, clients(url, "127.0.0.1") as [c]:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                held = await hold(nursery, c, "completes", 1)
                answers: list[httpx.Response] = []

                async def behind() -> None:
                    answers.append(await c.post("/mcp", **call("echo", "next", 2)))

                nursery.start_soon(behind)
                while app.state.services.admission.statistics().waiting == 0:
                    await trio.testing.wait_all_tasks_blocked()  # the echo call is in the queue
                GATES["completes"].set()  # the gate call ends, and its slot passes to the echo call
    assert held[0].status_code == 200 and answers[0].status_code == 200
    assert app.state.services.admission.statistics().waited == 1


async def test_a_slot_is_given_back_when_a_modern_client_leaves(app_factory: Any) -> None:
    tag = "admission-leave"
    STARTED[tag] = trio.Event()
    app = app_factory(http={"max_calls_in_flight": 1, "admission_wait": 30.0})
    watching = watcher_started(app)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "block", "arguments": {"text": tag}, "_meta": meta()}}
    async with run_app(app) as url, clients(url, "127.0.0.1") as [c]:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:  # the block call never ends on its own
                nursery.start_soon(lambda: c.post("/mcp", headers=modern_headers("tools/call", "block"), json=body))
                await STARTED[tag].wait()
                await watching.wait()
                nursery.cancel_scope.cancel()  # the client leaves: the call is cancelled
            await CANCELLED_EVENTS.setdefault(tag, trio.Event()).wait()
            r = await c.post("/mcp", **call("echo", "after", 2))  # waits for the slot, bounded above
            assert r.status_code == 200


async def test_outcome_tools_and_legacy_set_up_pass_a_full_node(app_factory: Any) -> None:
    app = app_factory(http={"max_calls_in_flight": 1, "admission_wait": 0.0}, taskqueue={"enabled": True})
    async with run_app(app) as url, clients(url, "127.0.0.1") as [c]:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await hold(nursery, c, "outcome", 1)
                headers, body = modern_call("taskqueue_renew", {"task_id": "t-none", "token": "x"}, 2)
                r = await c.post("/mcp", headers=headers, json=body)
                assert r.status_code == 200 and r.json()["result"]["isError"] is True  # no such lease, not 503
                session = await open_session(c)  # initialize is not a call: it needs no slot
                r = await c.post("/mcp", headers=session, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                                              "params": {"name": "echo", "arguments": {"text": "x"}}})
                assert r.status_code == 503 and r.json()["id"] == 3 and r.json()["error"]["code"] == -32010
                GATES["outcome"].set()


# -- the listener ----------------------------------------------------------------------------------


async def test_triomcp_serve_drains_a_call_in_flight_on_shutdown(app_factory: Any) -> None:
    """``serving.serve`` (what ``triomcp serve`` runs) keeps Hypercorn's graceful shutdown."""
    from hypercorn.config import Config

    from triomcp.server.serving import serve

    app = app_factory()
    config = Config()
    config.bind, config.graceful_timeout, config.errorlog = ["127.0.0.1:0"], 5.0, None
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                                                  task_status=task_status))
            async with clients(binds[0], "127.0.0.1") as [c], trio.open_nursery() as calls:
                held = await hold(calls, c, "drain", 1)
                stop.set()  # shutdown begins with the call in flight
                await trio.testing.wait_all_tasks_blocked()
                async with httpx.AsyncClient(base_url=binds[0], timeout=5) as late:
                    with pytest.raises(httpx.ConnectError):  # the listener is closed: nothing new gets in
                        await late.get("/healthz")
                GATES["drain"].set()  # the call in flight still finishes and is answered
        assert held[0].status_code == 200 and held[0].json()["result"]["structuredContent"]["text"] == "drain"



class _Steps(trio.abc.Instrument):
    """Counts the scheduler steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


@pytest.mark.parametrize("draining", [True, False])
async def test_waiting_connections_are_all_taken_in_one_turn(draining: bool) -> None:
    """The starvation this listener removes: trio's takes one connection per scheduler turn."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    listener: trio.abc.Listener[trio.SocketStream] = (
        DrainingListener(sock, max_batch=64) if draining else trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    peers = [socket.create_connection(sock.getsockname()) for _ in range(20)]  # all in the accept queue now
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(10):
            streams = [await listener.accept() for _ in peers]
    finally:
        trio.lowlevel.remove_instrument(steps)
        for peer in peers:
            peer.close()
    assert len(streams) == 20
    if draining:
        assert steps.steps <= 2  # one wait for the first connection, then the other 19 at once
    else:
        assert steps.steps >= 20
    for stream in streams:
        await stream.aclose()
    await listener.aclose()


async def test_connections_taken_but_not_handed_out_are_closed_with_the_listener() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    listener = DrainingListener(sock, max_batch=8)
    peers = [socket.create_connection(sock.getsockname()) for _ in range(3)]
    with trio.fail_after(10):
        first = await listener.accept()
        await listener.aclose()
    for peer in peers[1:]:
        peer.settimeout(10)
        assert peer.recv(1) == b""  # closed by the server, never served
    await first.aclose()
    for peer in peers:
        peer.close()


# -- calls from peers ----------------------------------------------------------------------------


async def test_a_peers_calls_share_the_nodes_budget_and_past_it_get_32010_at_once() -> None:
    from tests.toolkit import register_test_tools
    from triomcp.mcp.engine import Engine
    from triomcp.mcp.registry import Registry
    from triomcp.mcp.results import modern_meta
    from triomcp.server.peer_mcp import PeerMcpHandler

    registry = Registry()
    register_test_tools(registry)
    admission = Admission(capacity=1, per_principal=1, wait=0.05)
    handler = PeerMcpHandler(Engine(registry), admission=admission)

    async def notify(note: dict[str, Any]) -> None:
        pass

    def frame(ident: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": ident, "method": "tools/call",
                "params": {"name": tool, "arguments": arguments, "_meta": modern_meta()}}

    STARTED["peer-held"], GATES["peer-held"] = trio.Event(), trio.Event()
    answers: list[dict[str, Any] | None] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async def held() -> None:
                answers.append(await handler(frame(1, "gate", {"text": "peer-held"}), peer_id="12D3KooWa",
                                             notify=notify))

            nursery.start_soon(held)
            await STARTED["peer-held"].wait()
            assert admission.statistics().in_flight == 1  # the peer's call holds the node's one slot
            start = trio.current_time()
            refused = await handler(frame(2, "echo", {"text": "x"}), peer_id="12D3KooWb", notify=notify)
            assert trio.current_time() - start < 2.0
            assert refused is not None and refused["id"] == 2 and refused["error"]["code"] == -32010
            assert refused["error"]["data"]["reason"] == "capacity"
            assert admission.enter_nowait("address:127.0.0.1") is not None  # HTTP calls meet the same budget
            GATES["peer-held"].set()
    assert answers[0] is not None and answers[0]["result"]["structuredContent"]["text"] == "peer-held"
    assert admission.statistics().in_flight == 0
    served = await handler(frame(3, "echo", {"text": "after"}), peer_id="12D3KooWb", notify=notify)
    assert served is not None and served["result"]["structuredContent"]["text"] == "after"
