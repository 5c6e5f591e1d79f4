"""Network namespaces made (and removed) by the tests that need them: two joined by a veth pair
(:func:`veth_pair`), and two private networks behind masquerading routers (:func:`nat_topology`),
with three ``triomcp node`` processes in them (:func:`nat_mesh`: a public relay, a node behind
each router; ``tests/reliability/test_nat.py`` and ``bench/nat.py`` drive it through the CLI)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.procs import env_for, run_cli, started, stderr_text, wait_for_announce
from triomcp.p2p import AuthorizedPeers
from triomcp.p2p.identity import load_or_create_identity, peer_id_of

PORT = 4001
"""Where the nodes of :func:`nat_mesh` listen."""
READY_WITHIN = 90.0
"""Seconds :func:`eventually` waits by default (a reservation, a peer exchange with R)."""


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def veth_pair(prefix: str, subnet: str) -> Iterator[tuple[str, str, str]]:
    """Namespaces A and B with ``{subnet}.1/24`` and ``{subnet}.2/24`` on a veth pair (multicast
    on, for mDNS): yields (ns_a, ns_b, A's interface). Skips, saying why, without root or iproute2."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (the `ip` command) to create network namespaces")
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    tag = secrets.token_hex(3)
    ns_a, ns_b, va, vb = f"tmcp-{prefix}a-{tag}", f"tmcp-{prefix}b-{tag}", f"t{prefix}a{tag}", f"t{prefix}b{tag}"
    made = ip("netns", "add", ns_a)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces here (needs root and iproute2): {made.stderr.strip()}")
    try:
        ip("netns", "add", ns_b)
        for cmd in (["link", "add", va, "type", "veth", "peer", "name", vb],
                    ["link", "set", va, "netns", ns_a], ["link", "set", vb, "netns", ns_b],
                    ["-n", ns_a, "addr", "add", f"{subnet}.1/24", "dev", va],
                    ["-n", ns_b, "addr", "add", f"{subnet}.2/24", "dev", vb],
                    # mDNS is multicast (224.0.0.251, UDP 5353): the interfaces must carry it.
                    ["-n", ns_a, "link", "set", va, "multicast", "on", "up"],
                    ["-n", ns_b, "link", "set", vb, "multicast", "on", "up"],
                    ["-n", ns_a, "link", "set", "lo", "up"], ["-n", ns_b, "link", "set", "lo", "up"]):
            out = ip(*cmd)
            assert out.returncode == 0, (cmd, out.stderr)
        yield ns_a, ns_b, va
    finally:
        ip("netns", "del", ns_a)
        ip("netns", "del", ns_b)


@dataclass(frozen=True)
class NatTopology:
    """A public network (``PUBLIC``.0/24) with a node namespace ``public`` at ``PUBLIC``.10 on a bridge,
    and two private networks behind masquerading routers: ``a`` (``10.241.1.2``) behind ``router_a``
    (``PUBLIC``.1) and ``b`` (``10.241.2.2``) behind ``router_b`` (``PUBLIC``.2)."""

    public: str
    a: str
    b: str
    router_a: str
    router_b: str

    PUBLIC_IP = "198.18.0.10"
    A_IP = "10.241.1.2"
    B_IP = "10.241.2.2"


NAT_KINDS = ("masquerade", "endpoint-independent", "symmetric")
"""What the routers of :func:`nat_topology` do (nftables ``masquerade`` in each):

- ``masquerade``: Linux's default: the source port kept when free; a connection from outside that
  answers none is answered by the router itself (a TCP RST, nothing listens on it);
- ``endpoint-independent``: the same mapping (one private address and port leave as one public
  port, whoever the destination), but unsolicited packets from outside are dropped, as a home
  router's firewall does: what TCP hole punching needs (both sides' SYNs cross);
- ``symmetric``: ``masquerade fully-random``: every connection leaves from a random public port,
  so no peer can predict the port to punch through (hole punching cannot work)."""


def _nat_rules(wan: str, lan: str, kind: str = "masquerade") -> str:
    """A home router's NAT: the private network's connections leave masqueraded as the router's
    public address; nothing from the public side enters the private network unless it answers one."""
    flags = " fully-random" if kind == "symmetric" else ""
    drop = (f"""
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" drop
    }}""" if kind != "masquerade" else "")
    return f"""
table ip nat {{
    chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname "{wan}" masquerade{flags}; }}
}}
table ip filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
    }}{drop}
}}
"""


@contextlib.contextmanager
def nat_topology(kind: str = "masquerade") -> Iterator[NatTopology]:
    """Five namespaces (made here, removed at the end): see :class:`NatTopology`; the routers'
    NAT is ``kind`` (:data:`NAT_KINDS`). The routers have
    no default route, so a node behind one cannot reach the other private network at all (its
    dials fail at once, as ICMP unreachable), and only connections from inside pass a router.
    Needs root, iproute2 and nft (``make test`` installs nftables); skips without root, as
    :func:`veth_pair` does."""
    assert kind in NAT_KINDS, kind
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (the `ip` command) to create network namespaces")
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("nft") is None:
        pytest.fail("needs nft for the NAT routers: `make test` installs it (apt-get install nftables)")
    tag = secrets.token_hex(3)
    names = {role: f"tmcp-nat{role}-{tag}" for role in ("p", "a", "b", "ra", "rb")}
    made = ip("netns", "add", names["p"])
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces here (needs root and iproute2): {made.stderr.strip()}")
    try:
        for role in ("a", "b", "ra", "rb"):
            assert ip("netns", "add", names[role]).returncode == 0
        p, bridge = names["p"], f"br{tag}"
        steps: list[list[str]] = [["-n", p, "link", "add", bridge, "type", "bridge"],
                                  ["-n", p, "addr", "add", f"{NatTopology.PUBLIC_IP}/24", "dev", bridge],
                                  ["-n", p, "link", "set", bridge, "up"], ["-n", p, "link", "set", "lo", "up"]]
        rules: dict[str, str] = {}
        for side, router_ip, lan in (("a", "198.18.0.1", "10.241.1"), ("b", "198.18.0.2", "10.241.2")):
            router, host = names[f"r{side}"], names[side]
            pub, wan, lan_if, eth = f"p{side}{tag}", f"w{side}{tag}", f"l{side}{tag}", f"e{side}{tag}"
            steps += [["link", "add", pub, "type", "veth", "peer", "name", wan],
                      ["link", "set", pub, "netns", p], ["link", "set", wan, "netns", router],
                      ["-n", p, "link", "set", pub, "master", bridge], ["-n", p, "link", "set", pub, "up"],
                      ["-n", router, "addr", "add", f"{router_ip}/24", "dev", wan],
                      ["-n", router, "link", "set", wan, "up"], ["-n", router, "link", "set", "lo", "up"],
                      ["link", "add", lan_if, "type", "veth", "peer", "name", eth],
                      ["link", "set", lan_if, "netns", router], ["link", "set", eth, "netns", host],
                      ["-n", router, "addr", "add", f"{lan}.1/24", "dev", lan_if],
                      ["-n", router, "link", "set", lan_if, "up"],
                      ["-n", host, "addr", "add", f"{lan}.2/24", "dev", eth], ["-n", host, "link", "set", eth, "up"],
                      ["-n", host, "link", "set", "lo", "up"],
                      ["-n", host, "route", "add", "default", "via", f"{lan}.1"]]
            rules[router] = _nat_rules(wan, lan_if, kind)
        for cmd in steps:
            out = ip(*cmd)
            assert out.returncode == 0, (cmd, out.stderr)
        for router, ruleset in rules.items():
            for cmd in (["sysctl", "-qw", "net.ipv4.ip_forward=1"], ["nft", "-f", "-"]):
                out = subprocess.run(["ip", "netns", "exec", router, *cmd], input=ruleset if cmd[0] == "nft" else None,
                                     capture_output=True, text=True, timeout=30, check=False)
                assert out.returncode == 0, (router, cmd, out.stderr)
        yield NatTopology(public=p, a=names["a"], b=names["b"], router_a=names["ra"], router_b=names["rb"])
    finally:
        for name in names.values():
            ip("netns", "del", name)


def cli_call(node: str, env: dict[str, str], netns: str, tool: str,
             arguments: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """``triomcp call NODE TOOL ARGUMENTS`` in ``netns``."""
    return run_cli(["call", node, tool, json.dumps(arguments or {})], env, timeout=60, netns=netns)


def cli_json(out: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a CLI call printed, which must have succeeded."""
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def eventually(attempt: Callable[[], subprocess.CompletedProcess[str]], ok: Callable[[Any], bool], what: str,
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


@dataclass
class Mesh:
    """R, A and B running, as the tests drive them."""

    ids: dict[str, str]
    env: dict[str, dict[str, str]]
    ns: dict[str, str]
    procs: dict[str, Any]
    r_addr: str

    def call(self, n: str, tool: str, arguments: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return cli_call(self.ids[n], self.env[n], self.ns[n], tool, arguments)


@contextlib.contextmanager
def nat_mesh(tmp_path: Path, topology: NatTopology, *, hole_punch: bool) -> Iterator[Mesh]:
    """R (the relay, public), A and B (behind their routers, bootstrapping to R and reserving on
    it), all authorizing each other; on failure, each node's stderr is printed."""
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
    relay = {"r": {"service": True, "hole_punch": hole_punch}, "a": {"use_bootstrap": True, "hole_punch": hole_punch},
             "b": {"use_bootstrap": True, "hole_punch": hole_punch}}
    env = {n: env_for(data[n], n, p2p__listen=[f"/ip4/{listen[n]}/tcp/{PORT}"],
                      p2p__bootstrap=[] if n == "r" else [r_addr], p2p__relay=relay[n],
                      p2p__reachability={"interval": 5},
                      taskqueue={"mesh": False, "handlers": handlers}) for n in "rab"}
    with started(["node"], env["r"], netns=ns["r"]) as r, started(["node"], env["a"], netns=ns["a"]) as a, \
            started(["node"], env["b"], netns=ns["b"]) as b:
        procs = {"r": r, "a": a, "b": b}
        try:
            for n, proc in procs.items():
                assert wait_for_announce(data[n], proc)["peer_id"] == ids[n]
            yield Mesh(ids, env, ns, procs, r_addr)
        except BaseException:
            for n, proc in procs.items():
                print(f"--- {n} stderr ---\n{stderr_text(proc, 6000)}")
            raise
        for proc in procs.values():
            assert proc.poll() is None  # nobody crashed


def nat_cannot_be_crossed(mesh: Mesh) -> None:
    """From A's network, B's own address cannot even be reached by TCP."""
    probe = subprocess.run(["ip", "netns", "exec", mesh.ns["a"], sys.executable, "-c",
                            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)",
                            NatTopology.B_IP, str(PORT)], capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode != 0 and "unreachable" in probe.stderr, probe.stderr


def router_lets_nothing_in(mesh: Mesh) -> None:
    """From A's network, a TCP connection to B's router's public address on B's port is not
    answered (the router drops it): only a hole punch gets through."""
    probe = subprocess.run(["ip", "netns", "exec", mesh.ns["a"], sys.executable, "-c",
                            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)",
                            "198.18.0.2", str(PORT)], capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode != 0 and "timed out" in probe.stderr, probe.stderr
