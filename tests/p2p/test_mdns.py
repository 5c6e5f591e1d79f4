"""mDNS discovery: two nodes in network namespaces this test creates find and connect to each other.

Node A and node B run as `triomcp node` processes, each in its own namespace, joined by a veth
pair (multicast on). Neither has a bootstrap address or a remembered peer: only mDNS can bring
them together. Each lists the other in `authorized_peers`, so each dials the other once found.
And mDNS is off unless asked for: a default node starts no zeroconf thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import veth_pair
from tests.p2p.conftest import node_in
from tests.procs import env_for, run_cli, started, wait_for_announce
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.settings import P2PSettings

CONNECT_WITHIN = 30.0


@pytest.fixture
def mdns_namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair with multicast on: (ns_a, ns_b)."""
    with veth_pair("m", "10.232.0") as (ns_a, ns_b, _):
        yield ns_a, ns_b


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
