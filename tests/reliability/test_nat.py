"""Two nodes behind NAT reach each other through a public relay, in network namespaces these tests create.

A public node R (``p2p.relay.service``) and two nodes, A and B, each in its own private network
behind its own masquerading router (nft; ``tests/netns.py``'s :func:`nat_topology`). A and B know
only R's address (their one bootstrap peer) and reserve a slot on it (``p2p.relay.use_bootstrap``);
all three authorize each other. Neither private network can reach the other (the test checks that
a TCP connection from A's network to B's address fails), so everything A does on B goes through R: ``p2p_call_tool``
from A to B, and a task submitted on A with ``peer`` = B, which runs on B and whose result comes
back. Real ``triomcp node`` processes, driven by the CLI in each node's namespace (the CLI dials its
node on the node's own address). Every wait is
bounded; each test takes about 20-40 s.

The first test runs behind Linux's default masquerade and asks for hole punching not at all
(``p2p.relay.hole_punch`` off): the relay is the path. It also checks reachability: R, dialed
back by A and B, is ``public``; A and B, whose routers let nothing in, are ``private``. The second
runs DCUtR (on by default) behind two kinds of NAT (``tests/netns.py``'s ``NAT_KINDS``): behind
``endpoint-independent`` routers the relayed connection is replaced by a direct one, the calls
move to it at once and the relayed one is closed within seconds (``p2p/direct.py``); behind
``symmetric`` ones it stays relayed, and calls still work.

The third kills the relay (SIGKILL) while A waits on B through it: the wait fails within a bound,
with an error that says the peer went, instead of hanging until its own timeout; once R is started
again (same identity, same address) A and B reconnect and reserve again by themselves, and A's
calls to B work again, the task B was running meanwhile included.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.procs import TRIOMCP, in_netns, run_cli, started, stop, wait_for_announce
from tests.netns import (
    NatTopology,
    cli_json,
    eventually,
    nat_cannot_be_crossed,
    nat_mesh,
    nat_topology,
    router_lets_nothing_in,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def topology() -> Iterator[NatTopology]:
    with nat_topology() as made:
        yield made


def test_two_nodes_behind_nat_call_each_other_and_run_tasks_through_a_relay(
        tmp_path: Path, topology: NatTopology) -> None:
    with nat_mesh(tmp_path, topology, hole_punch=False) as mesh:
        ids = mesh.ids
        # B reserves a slot on R and tells its peers its relayed address.
        relayed = f"{mesh.r_addr}/p2p-circuit/p2p/{ids['b']}"
        status, reserved_in = eventually(lambda: mesh.call("b", "p2p_status"),
                                          lambda s: relayed in s["relay"]["relayed_addrs"], "B's reservation on R")
        (reservation,) = status["relay"]["reservations"]
        assert reservation["relay"] == ids["r"] and reservation["state"] == "reserved"
        r_status = cli_json(mesh.call("r", "p2p_status"))
        assert ids["b"] in r_status["relay"]["service"]["reservations"]

        # Reachability: R is dialed back at its address; A and B, behind their routers, are not.
        for n, state in (("r", "public"), ("a", "private"), ("b", "private")):
            seen, _ = eventually(lambda n=n: mesh.call(n, "p2p_status"),  # type: ignore[misc]
                                  lambda s: s["reachability"]["state"] != "unknown", f"{n}'s reachability")
            assert seen["reachability"]["state"] == state, (n, seen["reachability"])
        r_id = run_cli(["id"], mesh.env["r"], netns=mesh.ns["r"]).stdout.splitlines()
        assert r_id[0] == ids["r"] and r_id[-1] == "reachability: public", r_id
        b_status = cli_json(mesh.call("b", "p2p_status"))
        assert b_status["relay"]["announces_relayed"] is True  # private: its relayed address is how it is reached

        nat_cannot_be_crossed(mesh)

        # A calls B's tools, through R (A learned B's relayed address from R by peer exchange).
        called, call_in = eventually(
            lambda: mesh.call("a", "p2p_call_tool", {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}),
            lambda c: c["is_error"] is False, "p2p_call_tool from A to B")
        assert called["result"]["peer_id"] == ids["b"]
        peers = cli_json(mesh.call("a", "p2p_peers"))["peers"]
        (b_seen,) = [p for p in peers if p["peer_id"] == ids["b"]]
        # Relayed, through R (usually one connection: two if A and B happened to dial each other at once).
        assert b_seen["connected"] and b_seen["connections"]
        assert all((c["kind"], c["relay"]) == ("relayed", ids["r"]) for c in b_seen["connections"]), b_seen
        assert relayed in b_seen["addrs"]

        # A task submitted on A for B runs on B, and its result comes back to A.
        submitted = mesh.call("a", "taskqueue_submit",
                              {"task_type": "test.sleep", "payload": {"seconds": 0.1}, "peer": ids["b"]})
        task_id = cli_json(submitted)["task_id"]
        waited = mesh.call("a", "taskqueue_wait", {"task_id": task_id, "peer": ids["b"], "timeout_s": 30})
        task = cli_json(waited)["task"]
        assert task["state"] == "succeeded" and task["result"]["node"] == "b", task

        pinged = mesh.call("a", "p2p_ping", {"peer": ids["b"]})
        print(f"\nreserved within {reserved_in:.1f}s of start; first relayed p2p_call_tool after "
              f"{call_in:.1f}s more; relayed ping {cli_json(pinged)['rtt_ms']} ms; "
              f"{len(b_seen['connections'])} connection(s) A-B")


@pytest.mark.parametrize("kind", ["endpoint-independent", "symmetric"])
def test_hole_punching_makes_the_connection_direct_where_the_nat_allows_and_the_relay_stays_otherwise(
        tmp_path: Path, kind: str) -> None:
    with nat_topology(kind) as topology, nat_mesh(tmp_path, topology, hole_punch=True) as mesh:
        ids = mesh.ids
        nat_cannot_be_crossed(mesh)
        router_lets_nothing_in(mesh)
        called, _ = eventually(
            lambda: mesh.call("a", "p2p_call_tool", {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}),
            lambda c: c["is_error"] is False, "p2p_call_tool from A to B")
        assert called["result"]["peer_id"] == ids["b"]
        # The peer whose id sorts first tries DCUtR once on the relayed connection.
        first = "a" if ids["a"] < ids["b"] else "b"
        status, punched_in = eventually(
            lambda: mesh.call(first, "p2p_status"),
            lambda s: s["relay"]["hole_punch"]["upgraded"] + s["relay"]["hole_punch"]["failed"] >= 1,
            "a hole punch's outcome")
        punch = status["relay"]["hole_punch"]
        peers = cli_json(mesh.call("a", "p2p_peers"))["peers"]
        (b_seen,) = [p for p in peers if p["peer_id"] == ids["b"]]
        kinds = [c["kind"] for c in b_seen["connections"]]
        moved_in = None
        if kind == "endpoint-independent":
            assert punch["upgraded"] == 1, status["relay"]
            assert "direct" in kinds, b_seen
            direct = [c for c in b_seen["connections"] if c["kind"] == "direct"]
            assert all("/ip4/198.18.0.2/" in c["addr"] for c in direct), b_seen  # B's router's public address
            # The calls move to the direct connection at once, and the relayed one, unused, is
            # closed (py-libp2p alone closed it 60 s after the punch, the calls on it until then).
            b_seen, moved_in = eventually(lambda: mesh.call("a", "p2p_peers"), lambda out: [
                c["kind"] for p in out["peers"] if p["peer_id"] == ids["b"] for c in p["connections"]] == ["direct"],
                "the relayed connection A-B closed", within=MOVED_WITHIN)
            moved = [cli_json(mesh.call(n, "p2p_status"))["relay"]["to_direct"] for n in ("a", "b")]
            assert sum(m["closed"] for m in moved) >= 1 and sum(m["cut"] for m in moved) == 0, moved
        else:
            assert punch["upgraded"] == 0 and punch["failed"] == 1, status["relay"]
            assert kinds and set(kinds) == {"relayed"}, b_seen
        # Either way, calls work (over whichever path is there now), and A's MCP stream to B is on it.
        again = cli_json(mesh.call("a", "p2p_call_tool", {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}))
        assert again["is_error"] is False and again["result"]["peer_id"] == ids["b"]
        (b_now,) = [p for p in cli_json(mesh.call("a", "p2p_peers"))["peers"] if p["peer_id"] == ids["b"]]
        path = "direct" if kind == "endpoint-independent" else "relayed"
        assert [c["kind"] for c in b_now["connections"]] == [path] and b_now["connections"][0]["streams"] >= 1, b_now
        print(f"\n{kind}: hole punch outcome after {punched_in:.1f}s: {punch}; A-B connections: {kinds}; "
              + (f"only the direct one {moved_in:.1f}s later" if moved_in is not None else "relayed only"))


MOVED_WITHIN = 10.0
"""Seconds after the punch's outcome within which A's relayed connection to B is gone (it carried
only the MCP streams, which move at once; py-libp2p alone closed it after 60 s)."""
KILLED_CALL_FAILS_WITHIN = 15.0
"""Seconds a call relayed through R may take to fail once R is killed (its own timeout is 50 s)."""


def test_killing_the_relay_fails_relayed_calls_clearly_and_they_recover_when_it_returns(tmp_path: Path) -> None:
    with nat_topology() as topology, contextlib.ExitStack() as later, \
            nat_mesh(tmp_path, topology, hole_punch=False) as mesh:
        ids = mesh.ids
        nat_cannot_be_crossed(mesh)
        eventually(lambda: mesh.call("a", "p2p_call_tool", {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}),
                   lambda c: c["is_error"] is False, "p2p_call_tool from A to B")
        task_id = cli_json(mesh.call("a", "taskqueue_submit", {"task_type": "test.sleep", "payload": {"seconds": 20},
                                                               "peer": ids["b"]}))["task_id"]
        # A call in flight through R: A waits on B's task (up to 50 s).
        waiting = subprocess.Popen(
            [*in_netns(mesh.ns["a"]), *TRIOMCP, "call", ids["a"], "taskqueue_wait",
             f'{{"task_id": "{task_id}", "peer": "{ids["b"]}", "timeout_s": 50}}'],
            env=mesh.env["a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2)  # the wait reaches B (a sleep, not a bound: the check below holds either way)
            assert waiting.poll() is None, waiting.communicate()
            stop(mesh.procs["r"], kill=True)
            killed = time.monotonic()
            out, err = waiting.communicate(timeout=KILLED_CALL_FAILS_WITHIN + 30)
            failed_in = time.monotonic() - killed
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(10)
        # It failed, clearly and soon: not a result, not A's or B's timeout.
        assert failed_in < KILLED_CALL_FAILS_WITHIN, (failed_in, out, err)
        said = out + err
        assert waiting.returncode != 0 or '"isError": true' in said or '"ok": false' in said, said
        assert "succeeded" not in out, said
        print(f"\nthe relayed wait failed {failed_in:.1f}s after R was killed: {said.strip()[-300:]}")

        # R comes back (same data dir, same address): A and B redial it, B reserves again, A calls B.
        r = later.enter_context(started(["node"], mesh.env["r"], netns=mesh.ns["r"]))
        mesh.procs["r"] = r  # nat_mesh checks at the end that it still runs
        assert wait_for_announce(tmp_path / "r", r)["peer_id"] == ids["r"]
        back = time.monotonic()
        relayed = f"{mesh.r_addr}/p2p-circuit/p2p/{ids['b']}"
        eventually(lambda: mesh.call("b", "p2p_status"), lambda s: relayed in s["relay"]["relayed_addrs"],
                   "B's reservation on the restarted R")
        called, _ = eventually(
            lambda: mesh.call("a", "p2p_call_tool", {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}),
            lambda c: c["is_error"] is False, "p2p_call_tool from A to B after R came back")
        assert called["result"]["peer_id"] == ids["b"]
        task = cli_json(mesh.call("a", "taskqueue_wait", {"task_id": task_id, "peer": ids["b"], "timeout_s": 40}))["task"]
        assert task["state"] == "succeeded" and task["result"]["node"] == "b", task
        print(f"calls from A to B worked again {time.monotonic() - back:.1f}s after R was back")
