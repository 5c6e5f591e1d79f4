"""Network namespaces made (and removed) by the tests that need them: two joined by a veth pair
(:func:`veth_pair`), and two private networks behind masquerading routers (:func:`nat_topology`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


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


def _nat_rules(wan: str, lan: str) -> str:
    """A home router's NAT: the private network's connections leave masqueraded as the router's
    public address; nothing from the public side enters the private network unless it answers one."""
    return f"""
table ip nat {{
    chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname "{wan}" masquerade; }}
}}
table ip filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
    }}
}}
"""


@contextlib.contextmanager
def nat_topology() -> Iterator[NatTopology]:
    """Five namespaces (made here, removed at the end): see :class:`NatTopology`. The routers have
    no default route, so a node behind one cannot reach the other private network at all (its
    dials fail at once, as ICMP unreachable), and only connections from inside pass a router.
    Needs root, iproute2 and nft (``make test`` installs nftables); skips without root, as
    :func:`veth_pair` does."""
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
            rules[router] = _nat_rules(wan, lan_if)
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
