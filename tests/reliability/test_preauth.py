"""Attacks before authentication on a real ``triomcp node`` process, over raw TCP on 127.0.0.1.

- a huge multistream length prefix (GHSA-hmjq-g7pp-rw3x), 1 and 8 connections at once: the node
  refuses it unread (its RSS peak, read from /proc, grows < 64 MiB);
- a peer that sends nothing, and one that trickles a byte a second: closed at
  ``p2p.handshake_timeout`` (5 s), not libp2p's 10 s;
- a thousand connections, from one source and then from twenty: capped per source (16) and
  overall (256), while an authorized peer's pings and tool calls are served throughout.

``TRIOMCP_TEST_WITHOUT_HARDENING=1`` runs the same tests against a node without the mitigation
(hardening.apply and the admission gate made no-ops, libp2p's own 10 s deadline): each then fails.
Bounded waits, no sleeps for synchronisation (the trickling peer's one-second pace is the attack).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import multiaddr as ma
import pytest
import trio
from libp2p.utils.varint import encode_uvarint

from tests.procs import env_for, started, wait_for_announce
from triomcp.p2p import CLI_IDENTITY_FILE, FRONTEND_IDENTITY_FILE, Node, open_node
from triomcp.p2p.identity import load_or_create_identity
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.settings import P2PSettings

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
WITHOUT = os.environ.get("TRIOMCP_TEST_WITHOUT_HARDENING") == "1"
UNHARDENED = """\
import triomcp.p2p.admission, triomcp.p2p.hardening
triomcp.p2p.hardening.apply = lambda: False
triomcp.p2p.admission.InboundGate.install = lambda self, swarm: None
"""
DEFAULTS = P2PSettings()
HEADER = b"\x13/multistream/1.0.0\n"
"""What the node sends first on every connection it admits."""


@contextlib.contextmanager
def running_node(tmp_path: Path, **p2p: Any) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A ``triomcp node`` process: (process, P2P port, data dir)."""
    data = tmp_path / "node"
    if WITHOUT:
        p2p["handshake_timeout"] = 10.0  # libp2p's own inbound_upgrade_timeout
    env = env_for(data, "node", p2p=p2p) if p2p else env_for(data, "node")
    if WITHOUT:
        site = tmp_path / "unhardened"
        site.mkdir()
        (site / "sitecustomize.py").write_text(UNHARDENED)
        env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    with started(["node"], env, tmp_path / "node.log") as proc:
        info = wait_for_announce(data, proc)
        yield proc, int(ma.Multiaddr(info["multiaddrs"][0]).value_for_protocol("tcp")), data


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)


async def until_closed(stream: trio.SocketStream) -> bytes:
    """What the node sends until it closes the connection (a reset, when our bytes were unread, too)."""
    received = b""
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


# -- a huge length prefix ------------------------------------------------------------------------
async def claim_a_gigabyte(port: int, streamed: int = 200 * MiB) -> tuple[int, float]:
    """Claim a 2^30-byte multistream message and stream up to ``streamed`` bytes of it: returns
    the bytes the node took and the seconds until it closed the connection."""
    chunk = b"x" * MiB
    sent = 0
    start = trio.current_time()
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        try:
            await stream.send_all(encode_uvarint(2**30))
            while sent < streamed:
                await stream.send_all(chunk)
                sent += len(chunk)
        except trio.BrokenResourceError:
            pass
        await until_closed(stream)
    return sent, trio.current_time() - start


@pytest.mark.parametrize("parallel", [1, 8])
def test_a_huge_length_prefix_before_noise_is_refused_unread(tmp_path: Path, parallel: int) -> None:
    with running_node(tmp_path) as (proc, port, _):
        before = status_kib(proc.pid, "VmRSS")
        reset_peak_rss(proc.pid)

        async def attack() -> list[tuple[int, float]]:
            results: list[tuple[int, float]] = []

            async def one() -> None:
                results.append(await claim_a_gigabyte(port))

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(parallel):
                        nursery.start_soon(one)
            return results

        results = trio.run(attack)
        growth = status_kib(proc.pid, "VmHWM") - before
        assert proc.poll() is None
    assert growth < 64 * 1024, f"the node's RSS peaked {growth // 1024} MiB above its idle size"
    for sent, seconds in results:
        assert sent <= 16 * MiB and seconds < 3, (sent // MiB, seconds)  # refused at once, not at the deadline


# -- slow peers ---------------------------------------------------------------------------------
async def silent(port: int) -> float:
    start = trio.current_time()
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await until_closed(stream)
    return trio.current_time() - start


async def trickle(port: int) -> float:
    """A valid multistream header, then a Noise proposal, one byte a second."""
    payload = HEADER + b"\x07/noise\n"
    start = trio.current_time()
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        with contextlib.suppress(trio.BrokenResourceError):  # a reset is a close too
            for byte in payload:
                await stream.send_all(bytes([byte]))
                with trio.move_on_after(1):  # the attack's pace; a close ends it at once
                    if not await stream.receive_some(65536):
                        break
    return trio.current_time() - start


def test_silent_and_trickling_peers_are_closed_at_the_handshake_deadline(tmp_path: Path) -> None:
    deadline = DEFAULTS.handshake_timeout
    with running_node(tmp_path) as (proc, port, _):

        async def both() -> dict[str, float]:
            times: dict[str, float] = {}

            async def run(name: str, peer: Any) -> None:
                times[name] = await peer(port)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, "silent", silent)
                    nursery.start_soon(run, "trickle", trickle)
            return times

        times = trio.run(both)
        assert proc.poll() is None
    for name, seconds in times.items():
        assert deadline - 0.5 < seconds < deadline + 1.5, f"the {name} peer was closed after {seconds:.1f}s"


# -- a thousand connections ------------------------------------------------------------------------
async def flood(port: int, sources: list[str], count: int, held: list[trio.socket.SocketType]) -> dict[str, Counter[str]]:
    """Open ``count`` connections from ``sources`` in turn; per source, how many the node admitted
    (it sent its multistream header; the socket is kept open in ``held``) or refused (closed unread).

    At most 64 await the node's verdict at once: more would overflow its accept backlog (128), and
    the kernel, not the node, would then hold them (SYN cookies)."""
    outcome: dict[str, Counter[str]] = {"admitted": Counter(), "refused": Counter()}
    window = trio.CapacityLimiter(64)

    async def verdict(sock: trio.socket.SocketType, source: str) -> bytes:
        try:
            await sock.bind((source, 0))
            await sock.connect(("127.0.0.1", port))
            with trio.fail_after(10):
                return await sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    async def one(source: str) -> None:
        async with window:
            sock = trio.socket.socket()
            first = b""
            try:
                first = await verdict(sock, source)
            finally:
                if first:
                    held.append(sock)
                else:
                    sock.close()
            outcome["admitted" if first else "refused"][source] += 1

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, sources[i % len(sources)])
    return outcome


@contextlib.asynccontextmanager
async def local_peer(data: Path, identity_file: str, multiaddr: str) -> AsyncIterator[tuple[Node, str]]:
    """An authorized peer (a local identity of the node's data dir), connected to the node."""
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, call_timeout=10.0)
    async with open_node(settings, data, identity_file=identity_file, announce=False) as peer:
        with trio.fail_after(10):
            node_id = await peer.connect(multiaddr)
        yield peer, node_id


def test_a_thousand_connections_are_capped_and_an_authorized_peer_is_served_throughout(tmp_path: Path) -> None:
    per_source, overall = DEFAULTS.max_unauthenticated_per_source, DEFAULTS.max_unauthenticated_inbound
    for identity in (CLI_IDENTITY_FILE, FRONTEND_IDENTITY_FILE):  # both authorized from the start
        load_or_create_identity(tmp_path / "node" / identity)
    # A long deadline keeps the admitted connections pending (and counted) for the whole test.
    with running_node(tmp_path, handshake_timeout=120.0) as (proc, _, data):
        multiaddr = wait_for_announce(data, proc)["multiaddrs"][0]
        port = int(ma.Multiaddr(multiaddr).value_for_protocol("tcp"))
        rtts: dict[str, list[float]] = {}

        async def served_throughout(phase: str, peer: Node, node_id: str, done: trio.Event) -> None:
            rtts[phase] = []
            while not done.is_set() and len(rtts[phase]) < 5000:
                with trio.fail_after(5):
                    rtts[phase].append(await peer.ping(node_id))

        async def attacked(sources: list[str], count: int, peer: Node, node_id: str,
                           held: list[trio.socket.SocketType]) -> dict[str, Counter[str]]:
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(served_throughout, f"from {len(sources)} sources", peer, node_id, done)
                with trio.fail_after(60):
                    outcome = await flood(port, sources, count, held)
                done.set()
            return outcome

        async def scenario() -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
            held: list[trio.socket.SocketType] = []
            try:
                async with local_peer(data, CLI_IDENTITY_FILE, multiaddr) as (peer, node_id):
                    # 500 from one address: 16 pending, the rest refused; other sources unaffected.
                    one = await attacked(["127.0.0.2"], 500, peer, node_id, held)
                    async with local_peer(data, FRONTEND_IDENTITY_FILE, multiaddr) as (fresh, _):
                        with trio.fail_after(10):
                            assert not (await call_peer_tool(fresh, node_id, "p2p_status", {})).get("isError")
                    # 500 more from twenty addresses: the node holds 256 pending, no more.
                    many = await attacked([f"127.0.0.{i}" for i in range(3, 23)], 500, peer, node_id, held)
                    with trio.fail_after(10):
                        assert not (await call_peer_tool(peer, node_id, "p2p_status", {})).get("isError")
                        assert await peer.ping(node_id) > 0
                return one, many
            finally:
                for sock in held:
                    sock.close()

        one, many = trio.run(scenario)
        assert proc.poll() is None
    assert one["admitted"] == Counter({"127.0.0.2": per_source})
    assert one["refused"] == Counter({"127.0.0.2": 500 - per_source})
    assert sum(many["admitted"].values()) == overall - per_source
    assert max(many["admitted"].values()) <= per_source
    assert sum(many["refused"].values()) == 500 - (overall - per_source)
    for phase, times in rtts.items():  # pinged while the flood went on, promptly
        assert times and max(times) < 2.0, (phase, times)
