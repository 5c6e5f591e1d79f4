"""A network partition between two nodes, in network namespaces this test creates.

Node A and node B run as `triomcp node` processes, each in its own namespace, joined by a veth
pair. The operator's CLI on A's side calls B through A (`p2p_call_tool`). The link goes down:
the call fails clearly within `p2p.call_timeout`. The link comes back: calls work again without
anyone restarting anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import ip as _ip
from tests.netns import veth_pair
from tests.procs import REPO
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of

pytestmark = pytest.mark.slow

PORT = 4101


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair: (ns_a, ns_b, A's interface)."""
    with veth_pair("p", "10.231.0") as made:
        yield made


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOMCP_")}
    env.update({"TRIOMCP_DATA_DIR": str(data), "TRIOMCP_TASKQUEUE__ENABLED": "false",
                "PYTHONPATH": f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}", **extra})
    return env


def _in_ns(ns: str, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "triomcp.cli", *args]


def _call_b_through_a(ns_a: str, data_a: Path, a_id: str, b_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_in_ns(ns_a, ["call", a_id, "p2p_call_tool",
                                        json.dumps({"peer": b_id, "tool": "p2p_status", "arguments": {}})]),
                          env=_env(data_a), capture_output=True, text=True, timeout=60, check=False)


def test_calls_fail_clearly_while_partitioned_and_recover_by_themselves(
        tmp_path: Path, namespaces: tuple[str, str, str]) -> None:
    ns_a, ns_b, va = namespaces
    data_a, data_b = tmp_path / "a", tmp_path / "b"
    a_id = peer_id_of(load_or_create_identity(data_a / "identity.key"))
    b_id = peer_id_of(load_or_create_identity(data_b / "identity.key"))
    AuthorizedPeers(data_a / "authorized_peers").authorize(b_id, "b")
    AuthorizedPeers(data_b / "authorized_peers").authorize(a_id, "a")
    b_addr = f"/ip4/10.231.0.2/tcp/{PORT}/p2p/{b_id}"
    procs = [
        subprocess.Popen(_in_ns(ns_b, ["node"]), env=_env(data_b, TRIOMCP_P2P__LISTEN=f'["/ip4/10.231.0.2/tcp/{PORT}"]'),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(_in_ns(ns_a, ["node"]), env=_env(
            data_a, TRIOMCP_P2P__LISTEN=f'["/ip4/10.231.0.1/tcp/{PORT}", "/ip4/127.0.0.1/tcp/{PORT + 1}"]', TRIOMCP_P2P__BOOTSTRAP=json.dumps([b_addr]),
            TRIOMCP_P2P__CALL_TIMEOUT="3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        deadline = time.monotonic() + 60
        while True:  # A comes up and reaches B through the bootstrap address
            first = _call_b_through_a(ns_a, data_a, a_id, b_id)
            if first.returncode == 0 or time.monotonic() > deadline:
                break
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["result"]["peer_id"] == b_id

        assert _ip("-n", ns_a, "link", "set", va, "down").returncode == 0
        started = time.monotonic()
        cut = _call_b_through_a(ns_a, data_a, a_id, b_id)
        assert cut.returncode != 0
        assert "p2p.call_timeout" in cut.stderr or "unreachable" in cut.stderr or "dialing" in cut.stderr, cut.stderr
        assert time.monotonic() - started < 30  # a clear failure, not a hang

        assert _ip("-n", ns_a, "link", "set", va, "up").returncode == 0
        deadline = time.monotonic() + 60
        while True:  # nobody restarts anything: A's connection to B comes back by itself
            healed = _call_b_through_a(ns_a, data_a, a_id, b_id)
            if healed.returncode == 0 or time.monotonic() > deadline:
                break
        assert healed.returncode == 0, healed.stderr
        assert json.loads(healed.stdout)["result"]["peer_id"] == b_id
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
