"""Two nodes behind NAT reach each other through a public relay, in network namespaces this test creates.

A public node R (``p2p.relay.service``) and two nodes, A and B, each in its own private network
behind its own masquerading router (nft; ``tests/netns.py``'s :func:`nat_topology`). A and B know
only R's address (their one bootstrap peer) and reserve a slot on it (``p2p.relay.use_bootstrap``);
all three authorize each other. Neither private network can reach the other (the test checks that
a TCP connection from A's network to B's address fails), so everything A does on B goes through R: ``p2p_call_tool``
from A to B, and a task submitted on A with ``peer`` = B, which runs on B and whose result comes
back. Real ``triomcp node`` processes, driven by the CLI in each node's namespace (the CLI dials its
node on the node's own address). Every wait is
bounded; the whole test takes about 20-40 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.procs import env_for, run_cli, started, stderr_text, wait_for_announce
from tests.netns import NatTopology, nat_topology
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of

pytestmark = pytest.mark.slow

PORT = 4001
READY_WITHIN = 90.0
"""Seconds for B's reservation and for A to learn B's relayed address (peer exchange with R)."""


@pytest.fixture
def topology() -> Iterator[NatTopology]:
    with nat_topology() as made:
        yield made


def _call(node: str, env: dict[str, str], netns: str, tool: str,
          arguments: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["call", node, tool, json.dumps(arguments or {})], env, timeout=60, netns=netns)


def _ok(out: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a CLI call printed, which must have succeeded."""
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _eventually(attempt: Callable[[], subprocess.CompletedProcess[str]], ok: Callable[[Any], bool], what: str,
                within: float = READY_WITHIN) -> tuple[Any, float]:
    """Run ``attempt`` (a CLI call) until its JSON output passes ``ok``, at most ``within`` seconds:
    the output and how long it took."""
    begun = time.monotonic()
    last = ""
    while time.monotonic() - begun < within:
        out = attempt()
        if out.returncode == 0:
            value = json.loads(out.stdout)
            if ok(value):
                return value, time.monotonic() - begun
            last = out.stdout
        else:
            last = out.stderr
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {within}s; last answer: {last[-2000:]}")


def test_two_nodes_behind_nat_call_each_other_and_run_tasks_through_a_relay(
        tmp_path: Path, topology: NatTopology) -> None:
    data = {n: tmp_path / n for n in "rab"}
    ids = {n: peer_id_of(load_or_create_identity(data[n] / "identity.key")) for n in "rab"}
    for n in "rab":
        allowed = AuthorizedPeers(data[n] / "authorized_peers")
        for other in "rab":
            if other != n:
                allowed.authorize(ids[other], other)
    r_addr = f"/ip4/{NatTopology.PUBLIC_IP}/tcp/{PORT}/p2p/{ids['r']}"
    ns = {"r": topology.public, "a": topology.a, "b": topology.b}
    listen = {"r": NatTopology.PUBLIC_IP, "a": NatTopology.A_IP, "b": NatTopology.B_IP}
    handlers = {"test.sleep": "tests.handlers:sleep_then_answer"}
    env = {n: env_for(data[n], n, p2p__listen=[f"/ip4/{listen[n]}/tcp/{PORT}"],
                      p2p__bootstrap=[] if n == "r" else [r_addr],
                      p2p__relay={"service": True} if n == "r" else {"use_bootstrap": True},
                      taskqueue={"mesh": False, "handlers": handlers}) for n in "rab"}

    with started(["node"], env["r"], netns=ns["r"]) as r, started(["node"], env["a"], netns=ns["a"]) as a, \
            started(["node"], env["b"], netns=ns["b"]) as b:
        procs = {"r": r, "a": a, "b": b}
        try:
            for n, proc in procs.items():
                assert wait_for_announce(data[n], proc)["peer_id"] == ids[n]

            # B reserves a slot on R and tells its peers its relayed address.
            relayed = f"{r_addr}/p2p-circuit/p2p/{ids['b']}"
            status, reserved_in = _eventually(lambda: _call(ids["b"], env["b"], ns["b"], "p2p_status"),
                                              lambda s: relayed in s["relay"]["relayed_addrs"], "B's reservation on R")
            (reservation,) = status["relay"]["reservations"]
            assert reservation["relay"] == ids["r"] and reservation["state"] == "reserved"
            r_status = _ok(_call(ids["r"], env["r"], ns["r"], "p2p_status"))
            assert ids["b"] in r_status["relay"]["service"]["reservations"]

            # The NAT is real: from A's network, B's own address cannot even be reached by TCP.
            probe = subprocess.run(["ip", "netns", "exec", ns["a"], sys.executable, "-c",
                                    "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)",
                                    NatTopology.B_IP, str(PORT)], capture_output=True, text=True, timeout=30,
                                   check=False)
            assert probe.returncode != 0 and "unreachable" in probe.stderr, probe.stderr

            # A calls B's tools, through R (A learned B's relayed address from R by peer exchange).
            called, call_in = _eventually(
                lambda: _call(ids["a"], env["a"], ns["a"], "p2p_call_tool",
                              {"peer": ids["b"], "tool": "p2p_status", "arguments": {}}),
                lambda c: c["is_error"] is False, "p2p_call_tool from A to B")
            assert called["result"]["peer_id"] == ids["b"]
            peers = _ok(_call(ids["a"], env["a"], ns["a"], "p2p_peers"))["peers"]
            (b_seen,) = [p for p in peers if p["peer_id"] == ids["b"]]
            # Relayed, through R (usually one connection: two if A and B happened to dial each other at once).
            assert b_seen["connected"] and b_seen["connections"]
            assert all(c == {"kind": "relayed", "relay": ids["r"]} for c in b_seen["connections"]), b_seen
            assert relayed in b_seen["addrs"]

            # A task submitted on A for B runs on B, and its result comes back to A.
            submitted = _call(ids["a"], env["a"], ns["a"], "taskqueue_submit",
                              {"task_type": "test.sleep", "payload": {"seconds": 0.1}, "peer": ids["b"]})
            task_id = _ok(submitted)["task_id"]
            waited = _call(ids["a"], env["a"], ns["a"], "taskqueue_wait",
                           {"task_id": task_id, "peer": ids["b"], "timeout_s": 30})
            task = _ok(waited)["task"]
            assert task["state"] == "succeeded" and task["result"]["node"] == "b", task

            pinged = _call(ids["a"], env["a"], ns["a"], "p2p_ping", {"peer": ids["b"]})
            print(f"\nreserved within {reserved_in:.1f}s of start; first relayed p2p_call_tool after "
                  f"{call_in:.1f}s more; relayed ping {_ok(pinged)['rtt_ms']} ms; "
                  f"{len(b_seen['connections'])} connection(s) A-B")
        except BaseException:
            for n, proc in procs.items():
                print(f"--- {n} stderr ---\n{stderr_text(proc, 6000)}")
            raise
        for proc in procs.values():
            assert proc.poll() is None  # nobody crashed
