"""Two network namespaces joined by a veth pair, made (and removed) by the test that needs them."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

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
