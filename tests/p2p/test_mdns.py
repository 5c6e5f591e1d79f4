"""mDNS discovery: two nodes in network namespaces this test creates find and connect to each other.

Node A and node B run as `triomcp node` processes, each in its own namespace, joined by a veth
pair (multicast on). Neither has a bootstrap address or a remembered peer: only mDNS can bring
them together. Each lists the other in `authorized_peers`, so each dials the other once found.
And mDNS is off unless asked for: a default node starts no zeroconf thread.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.p2p.conftest import node_in
from tests.procs import env_for, run_cli, started, wait_for_announce
from tests.reliability.test_partition import _ip
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.settings import P2PSettings

CONNECT_WITHIN = 30.0


@pytest.fixture
def mdns_namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair with multicast on: (ns_a, ns_b)."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (the `ip` command) to create network namespaces")
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    tag = secrets.token_hex(3)
    ns_a, ns_b, va, vb = f"tmcp-ma-{tag}", f"tmcp-mb-{tag}", f"tma{tag}", f"tmb{tag}"
    made = _ip("netns", "add", ns_a)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces here (needs root and iproute2): {made.stderr.strip()}")
    try:
        _ip("netns", "add", ns_b)
        for cmd in (["link", "add", va, "type", "veth", "peer", "name", vb],
                    ["link", "set", va, "netns", ns_a], ["link", "set", vb, "netns", ns_b],
                    ["-n", ns_a, "addr", "add", "10.232.0.1/24", "dev", va],
                    ["-n", ns_b, "addr", "add", "10.232.0.2/24", "dev", vb],
                    # mDNS is multicast (224.0.0.251, UDP 5353): the interface must carry it.
                    ["-n", ns_a, "link", "set", va, "multicast", "on", "up"],
                    ["-n", ns_b, "link", "set", vb, "multicast", "on", "up"],
                    ["-n", ns_a, "link", "set", "lo", "up"], ["-n", ns_b, "link", "set", "lo", "up"]):
            out = _ip(*cmd)
            assert out.returncode == 0, (cmd, out.stderr)
        yield ns_a, ns_b
    finally:
        _ip("netns", "del", ns_a)
        _ip("netns", "del", ns_b)


def _connected(peer_id: str, env: dict[str, str], netns: str) -> tuple[list[str], str]:
    """The node's connected peers, asked through the CLI in its namespace (and the raw answer)."""
    out = run_cli(["call", peer_id, "p2p_status"], env, timeout=30, netns=netns)
    if out.returncode != 0:
        return [], out.stderr
    return list(json.loads(out.stdout)["connected_peers"]), out.stdout


@pytest.mark.slow
def test_two_nodes_find_each_other_by_mdns_and_connect(tmp_path: Path,
                                                       mdns_namespaces: tuple[str, str]) -> None:
    ns = dict(zip("ab", mdns_namespaces, strict=True))
    data = {n: tmp_path / n for n in "ab"}
    ids = {n: peer_id_of(load_or_create_identity(data[n] / "identity.key")) for n in "ab"}
    AuthorizedPeers(data["a"] / "authorized_peers").authorize(ids["b"], "b")
    AuthorizedPeers(data["b"] / "authorized_peers").authorize(ids["a"], "a")
    # Port 0: the port advertised is the one bound. A also listens on loopback, as a node serving a
    # local CLI would: it advertises both, and B must reach it at the routable one.
    listen = {"a": ["/ip4/127.0.0.1/tcp/0", "/ip4/10.232.0.1/tcp/0"], "b": ["/ip4/10.232.0.2/tcp/0"]}
    env = {n: env_for(data[n], n, p2p__mdns=True, p2p__listen=listen[n], p2p__bootstrap=[],
                      taskqueue__enabled=False) for n in "ab"}
    other = {"a": "b", "b": "a"}

    with started(["node"], env["a"], netns=ns["a"]) as a, started(["node"], env["b"], netns=ns["b"]) as b:
        for n, proc in (("a", a), ("b", b)):
            assert wait_for_announce(data[n], proc)["peer_id"] == ids[n]
        begun = time.monotonic()
        seen: dict[str, float] = {}
        last: dict[str, str] = {}
        while len(seen) < 2 and time.monotonic() - begun < CONNECT_WITHIN:
            for n in "ab":
                if n not in seen:
                    peers, last[n] = _connected(ids[n], env[n], ns[n])
                    if ids[other[n]] in peers:
                        seen[n] = time.monotonic() - begun
        if len(seen) < 2:  # say what each node knows: was the peer found (peerstore) but not dialed?
            known = {n: run_cli(["call", ids[n], "p2p_peers"], env[n], timeout=30, netns=ns[n]).stdout for n in "ab"}
            pytest.fail(f"not connected within {CONNECT_WITHIN}s: connected after {seen}; "
                        f"last status {last}; known peers {known}")
        assert a.poll() is None and b.poll() is None


async def test_mdns_is_off_by_default_and_starts_no_zeroconf_thread(tmp_path: Path) -> None:
    assert P2PSettings().mdns is False
    async with node_in(tmp_path / "a") as node:
        assert node.host.mDNS is None  # type: ignore[attr-defined]
        names = [t.name for t in threading.enumerate()]
        # zeroconf runs its own event loop in a thread (`_run_loop`) and one thread per browser.
        assert not [n for n in names if "zeroconf" in n or "_run_loop" in n], names
