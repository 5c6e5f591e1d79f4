"""A real load balancer in front of real nodes: HAProxy or nginx over ``triomcp serve`` processes on 127.0.0.1.

:func:`balancer` runs HAProxy (a system package: ``make haproxy``) or nginx (``make nginx``, with
the shipped ``deploy/nginx.conf``: :mod:`harness.nginx`) in the foreground over some HTTP ports;
:func:`cluster` starts ``n`` meshed ``triomcp serve`` nodes (each authorizing every other, all
connected) and a balancer over them, and can SIGKILL and restart a node.

HAProxy balances every request, not every connection: in HTTP mode it runs keep-alive on both
sides (the default, no ``option http-server-close`` needed) and picks a server for each request, so
consecutive requests on one client connection go round-robin across the servers (the harness's
tests check it over one httpx connection). Only a 401/407 answer (NTLM) or ``option
prefer-last-server`` (off) ask it to stay on the last server, and the latter only for a
non-deterministic algorithm: with ``balance roundrobin`` it changed nothing, tried on 2.6.12. A
refused connection to a dead server is retried on another server at once (``retries 2``, ``option
redispatch 1``) while the health checks (``GET /readyz`` every ``check_interval_ms``, down after 2
failures, up after 1 success) take it out of the rotation and put it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from harness.mcp_http import modern_call, structured
from harness.nginx import NGINX, nginx_config, nginx_main_config
from harness.procs import (
    TRIOMCP,
    Process,
    env_for,
    free_port,
    run_cli,
    spawn,
    stop,
    wait_for_announce,
    wait_http,
    wait_until,
)

__all__ = ["BALANCERS", "HAPROXY", "Cluster", "ClusterNode", "balancer", "cluster", "haproxy_config", "p2p_status"]

BALANCERS = ("haproxy", "nginx")

HAPROXY = "haproxy"
"""The HAProxy command (2.6 or later, on ``PATH``)."""


def haproxy_config(frontend_port: int, backends: list[int], *, check_interval_ms: int = 500) -> str:
    """An HAProxy 2.6 configuration: a frontend on ``127.0.0.1:frontend_port``, round-robin over the
    HTTP servers on 127.0.0.1 at ``backends``, every request balanced on its own (no stickiness, no
    cookies), each server checked with ``GET /readyz`` (HTTP/1.1, ``Host: 127.0.0.1``: a node answers
    a request without an allowed Host 421) every ``check_interval_ms`` (down after 2 failures, up
    after 1 success), a refused connection redispatched to another server, timeouts
    long enough for SSE streams (1 h idle) but a 2 s connect. Runs in the foreground, logs to stderr."""
    if not backends:
        raise ValueError("a balancer needs at least one backend")
    servers = "\n".join(f"    server s{i} 127.0.0.1:{port} check inter {check_interval_ms} fall 2 rise 1"
                        for i, port in enumerate(backends))
    return f"""\
global
    maxconn 4096
    log stderr format raw daemon info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # Every request is balanced (keep-alive on both sides, no preference for the last server).
    no option prefer-last-server
    retries 2
    # Each retry of a refused connection goes to another server at once (not to the same one, 1 s later).
    option redispatch 1
    # A client that closes its connection cancels its call (the modern era cancels by closing):
    # without this HAProxy keeps the server side open until the answer comes.
    option abortonclose
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

frontend mcp
    bind 127.0.0.1:{frontend_port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    # HTTP/1.1 with a Host the nodes allow: a check without one (HTTP/1.0) is answered 421.
    http-check send ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
{servers}
"""


def _accepts(port: int) -> bool | None:
    """True once something accepts TCP connections on 127.0.0.1:``port`` (None: not yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return None


def _command(kind: str) -> str:
    exe = shutil.which({"haproxy": HAPROXY, "nginx": NGINX}[kind])
    if exe is None:
        raise RuntimeError(f"{kind} is not installed: make {kind} (or apt-get install {kind})")
    return exe


@contextlib.contextmanager
def balancer(backends: list[int], *, log: Path, kind: str = "haproxy") -> Iterator[str]:
    """``kind`` (:data:`BALANCERS`) over the HTTP servers on 127.0.0.1 at ``backends``, in the
    foreground and stopped at the end of the block; yields its base URL (``http://127.0.0.1:PORT``).
    HAProxy runs :func:`haproxy_config`, nginx the shipped ``deploy/nginx.conf``
    (:func:`harness.nginx.nginx_config`). Its configuration is written beside ``log`` (its stderr;
    nginx's request log is ``access.log`` beside it) and checked first (``haproxy -c``, ``nginx -t``)."""
    exe = _command(kind)
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    if kind == "haproxy":
        fd, name = tempfile.mkstemp(prefix="haproxy-", suffix=".cfg", dir=log.parent)
        cfg = Path(name)
        with os.fdopen(fd, "w") as out:
            out.write(haproxy_config(port, backends))
        check, run = [exe, "-c", "-f", str(cfg)], [exe, "-W", "-db", "-f", str(cfg)]
    else:
        prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=log.parent))
        (prefix / "triomcp.conf").write_text(nginx_config(port, backends))
        cfg = prefix / "nginx.conf"
        cfg.write_text(nginx_main_config(prefix / "triomcp.conf", prefix))
        check, run = [exe, "-t", "-p", str(prefix), "-c", str(cfg)], [exe, "-p", str(prefix), "-c", str(cfg)]
    checked = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"{' '.join(check)} failed ({checked.returncode}): {checked.stdout}{checked.stderr}")
    proc = spawn(run, os.environ, log=log)
    try:
        wait_until(lambda: _accepts(port), proc, what=f"{kind} to listen on 127.0.0.1:{port}", timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, timeout=10)


def p2p_status(client: httpx.Client, url: str = "", timeout: float = 5) -> dict[str, Any]:
    """The ``p2p_status`` tool's answer (``peer_id``, ``connected_peers``, ...) from the server at
    ``url`` (empty: ``client``'s base URL), by a modern (stateless) ``tools/call`` on ``client``:
    through a balancer, the ``peer_id`` names the node that answered."""
    headers, body = modern_call("p2p_status", {})
    reply = client.post(f"{url}/mcp", json=body, headers=headers, timeout=timeout)
    reply.raise_for_status()
    return structured(reply)


@dataclasses.dataclass
class ClusterNode:
    """One ``triomcp serve`` of a :class:`Cluster`: its HTTP base URL (``port``), data dir,
    environment (as last started), peer id and libp2p ``multiaddr``, process and stderr ``log``."""

    name: str
    url: str
    port: int
    data_dir: Path
    env: dict[str, str]
    peer_id: str
    log: Path
    proc: Process | None = None
    multiaddr: str = ""

    @property
    def alive(self) -> bool:
        """Whether its process runs."""
        return self.proc is not None and self.proc.poll() is None


@dataclasses.dataclass
class Cluster:
    """Nodes behind a balancer (``url``, its base URL; ``balancer_log``, its stderr: the request
    log and the servers going down and up); see :func:`cluster`."""

    url: str
    nodes: list[ClusterNode]
    balancer_log: Path
    connect_timeout: float = 30

    def by_peer(self, peer_id: str) -> ClusterNode:
        """The node with ``peer_id``."""
        return next(node for node in self.nodes if node.peer_id == peer_id)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (its process group) and wait until it is gone."""
        _stop(self.nodes[i])

    def restart(self, i: int) -> None:
        """Start node ``i`` again (after :meth:`kill`): the same data dir, environment and HTTP port,
        bootstrapped to a live node; returns once it is ready and connected to every live node."""
        node = self.nodes[i]
        if node.alive:
            raise RuntimeError(f"{node.name} is running: kill it first")
        live = [other for other in self.nodes if other is not node and other.alive]
        if live:
            node.env = {**node.env, "TRIOMCP_P2P__BOOTSTRAP": json.dumps([live[0].multiaddr])}
        _start(node)
        _ready(node)
        _connected([*live, node], self.connect_timeout)


def _start(node: ClusterNode) -> None:
    """Spawn ``triomcp serve`` for ``node`` on its HTTP port (stderr appended to its log)."""
    node.proc = spawn([*TRIOMCP, "serve", "--bind", f"127.0.0.1:{node.port}"], node.env, log=node.log)


def _stop(node: ClusterNode) -> None:
    """SIGKILL ``node``'s process, when it has one that runs."""
    if node.proc is not None:
        stop(node.proc, kill=True)


def _ready(node: ClusterNode) -> None:
    """Wait for ``node``'s announce file (its ``multiaddr``) and its ``/readyz``."""
    assert node.proc is not None
    announced = wait_for_announce(node.data_dir, node.proc)
    node.multiaddr = str(announced["multiaddrs"][0])
    wait_http(node.url, node.proc)


def _connected(nodes: list[ClusterNode], timeout: float) -> None:
    """Wait (``timeout`` seconds in all) until each of ``nodes`` is connected to every other."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        for node in nodes:
            assert node.proc is not None
            others = {other.peer_id for other in nodes if other is not node}

            def linked(node: ClusterNode = node, others: set[str] = others) -> bool | None:
                try:
                    connected = set(p2p_status(client, node.url)["connected_peers"])
                except (httpx.HTTPError, RuntimeError, ValueError):
                    return None
                return True if others <= connected else None

            wait_until(linked, node.proc, what=f"{node.name} to connect to {sorted(others)}",
                       timeout=max(0.1, deadline - time.monotonic()), interval=0.2)


def _authorize(node: ClusterNode, peers: list[ClusterNode]) -> None:
    """Authorize ``peers`` in ``node``'s data dir (``triomcp peers authorize``)."""
    for peer in peers:
        out = run_cli(["peers", "authorize", peer.peer_id, "--label", peer.name], node.env)
        if out.returncode != 0:
            raise RuntimeError(f"peers authorize {peer.name} for {node.name}: {out.stderr}")


def _peer_id(env: dict[str, str]) -> str:
    """The peer id of the data dir in ``env`` (``triomcp id``, creating the identity)."""
    out = run_cli(["id"], env)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"triomcp id failed: {out.stderr}")
    return out.stdout.split()[0]


@contextlib.contextmanager
def cluster(tmp_path: Path, n: int = 3, *, settings: dict[str, Any] | None = None,
            kind: str = "haproxy") -> Iterator[Cluster]:
    """``n`` ``triomcp serve`` nodes (``node0``..., data dirs and stderr logs in ``tmp_path``)
    behind a :func:`balancer` of ``kind``; every node authorizes every other, nodes 1.. bootstrap to node 0 and
    the block starts once all are ready (``/readyz``) and each is connected to every other. The
    settings (see :func:`harness.procs.env_for`) are ``taskqueue={"enabled": True, "lease_seconds":
    2.0}`` with ``settings`` over them (a section given as a dict updates that section's keys).
    Every node and the balancer are stopped at the end, whatever happens. The connection wait asks
    each node's ``p2p_status`` over HTTP: keep ``/mcp`` open (no ``auth`` tokens) on the nodes."""
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    merged: dict[str, Any] = {"taskqueue": {"enabled": True, "lease_seconds": 2.0}}
    for key, value in (settings or {}).items():
        base = merged.get(key)
        merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    names = [f"node{i}" for i in range(n)]
    envs = [env_for(tmp_path / name, name, **merged) for name in names]
    with ThreadPoolExecutor(max_workers=n) as pool:
        peer_ids = list(pool.map(_peer_id, envs))
    nodes: list[ClusterNode] = []
    for name, env, peer_id in zip(names, envs, peer_ids, strict=True):
        port = free_port()
        while port in {node.port for node in nodes}:
            port = free_port()
        nodes.append(ClusterNode(name=name, url=f"http://127.0.0.1:{port}", port=port, data_dir=tmp_path / name,
                                 env=env, peer_id=peer_id, log=tmp_path / f"{name}.log"))
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda node: _authorize(node, [p for p in nodes if p is not node]), nodes))
    with contextlib.ExitStack() as stack:
        for node in nodes:
            stack.callback(_stop, node)
        _start(nodes[0])
        _ready(nodes[0])
        for node in nodes[1:]:
            node.env = {**node.env, "TRIOMCP_P2P__BOOTSTRAP": json.dumps([nodes[0].multiaddr])}
            _start(node)
        for node in nodes[1:]:
            _ready(node)
        _connected(nodes, 30)
        log = tmp_path / f"{kind}.log"
        url = stack.enter_context(balancer([node.port for node in nodes], log=log, kind=kind))
        yield Cluster(url=url, nodes=nodes, balancer_log=log)
