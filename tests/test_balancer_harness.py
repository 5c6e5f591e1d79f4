"""The load-balancer harness itself: HAProxy's configuration and nginx's (the shipped one), per-request
round robin over one client connection, a killed node taken out of the rotation and a restarted one
put back, behind each.

Synchronous tests (subprocesses and bounded loops); loopback only. They need ``haproxy`` and
``nginx`` (``make haproxy nginx``).
"""

from __future__ import annotations

import collections
import itertools
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from harness.balancer import Cluster, balancer, cluster, haproxy_config, p2p_status
from harness.mcp_http import modern_call, structured
from harness.nginx import DEPLOYED, nginx_config, nginx_main_config
from harness.procs import free_port

pytestmark = pytest.mark.slow


def _one_connection(url: str) -> httpx.Client:
    """A client for ``url`` that keeps one connection (keep-alive) for all its requests."""
    return httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


def _answered(client: httpx.Client, c: Cluster, count: int) -> tuple[list[str], set[object]]:
    """``count`` sequential ``p2p_status`` calls through the balancer: the name of the node that
    answered each, and the client addresses (local ends) of the connections they went over."""
    names, local = [], set()
    headers, body = modern_call("p2p_status", {})
    for _ in range(count):
        reply = client.post("/mcp", json=body, headers=headers)
        reply.raise_for_status()
        names.append(c.by_peer(str(structured(reply)["peer_id"])).name)
        local.add(reply.extensions["network_stream"].get_extra_info("client_addr"))
    return names, local


def _logged(c: Cluster, line: str, timeout: float = 10) -> bool:
    """Whether the balancer logs ``line`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while line not in c.balancer_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is not installed: make haproxy"
    text = haproxy_config(free_port(), [free_port(), free_port()], check_interval_ms=250)
    for line in ("balance roundrobin", "option httpchk GET /readyz", "http-check expect status 200",
                 "check inter 250 fall 2 rise 1", "timeout tunnel 1h", "retries 2", "hdr Host 127.0.0.1"):
        assert line in text
    assert "cookie" not in text and "stick" not in text and "http-server-close" not in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    out = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout
    with pytest.raises(ValueError):
        haproxy_config(free_port(), [])


def test_balancer_without_live_backends_answers_503(tmp_path: Path) -> None:
    with balancer([free_port()], log=tmp_path / "haproxy.log") as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503


def test_nginx_runs_the_shipped_config_with_only_its_addresses_replaced(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    assert nginx is not None, "nginx is not installed: make nginx"
    ports = [free_port(), free_port(), free_port()]
    text = nginx_config(8999, ports)
    shipped, ours = DEPLOYED.read_text().splitlines(), text.splitlines()
    changed = [(a, b) for a, b in zip(shipped, ours, strict=True) if a != b]
    assert [b.strip() for _, b in changed] == [*(f"server 127.0.0.1:{p} max_fails=2 fail_timeout=5s;" for p in ports),
                                               "listen 127.0.0.1:8999;"]
    for line in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;",
                 'proxy_set_header Connection "";', "proxy_set_header Host $host;",
                 "proxy_next_upstream error timeout;", "proxy_read_timeout 1h;", "keepalive 32;"):
        assert line in text
    directives = [line.split("#", 1)[0] for line in shipped]
    for sticky in ("ip_hash", "hash ", "sticky", "non_idempotent", "proxy_ignore_client_abort on"):
        assert not any(sticky in d for d in directives), sticky
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "triomcp.conf").write_text(text)
    (prefix / "nginx.conf").write_text(nginx_main_config(prefix / "triomcp.conf", prefix))
    out = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0 and "test is successful" in out.stderr, out.stderr
    with pytest.raises(ValueError):
        nginx_config(8999, [])
    with pytest.raises(ValueError):  # a file no longer shaped as the harness expects is an error
        nginx_config(8999, ports, text="upstream triomcp {\n}\nserver {\n    listen 8080;\n}\n")


def test_nginx_without_live_backends_answers_502(tmp_path: Path) -> None:
    with balancer([free_port()], log=tmp_path / "nginx.log", kind="nginx") as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 502


def test_nginx_round_robin_per_request_a_killed_node_left_out_and_a_restarted_one_back(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, kind="nginx") as c, _one_connection(c.url) as client:
        names, local = _answered(client, c, 30)
        assert len(local) == 1, local  # one client connection, its requests spread over all nodes in turn
        assert all(a != b for a, b in itertools.pairwise(names)) and set(names) == {"node0", "node1", "node2"}
        c.kill(1)
        started = time.monotonic()  # a refused connection goes to the next server at once
        names, _ = _answered(client, c, 20)
        assert "node1" not in names and set(names) == {"node0", "node2"}, names
        assert time.monotonic() - started < 10
        c.restart(1)
        deadline = time.monotonic() + 20
        back: list[str] = []
        for _ in range(200):  # left out for fail_timeout (5 s) after its failures, then tried again
            back += _answered(client, c, 1)[0]
            if back[-1] == "node1" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert back[-1] == "node1", back


def test_cluster_round_robin_per_request_on_one_connection(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        assert len({node.peer_id for node in c.nodes}) == 3
        with httpx.Client(timeout=5) as direct:  # meshed: each node is connected to the two others
            for node in c.nodes:
                status = p2p_status(direct, node.url)
                assert status["peer_id"] == node.peer_id
                assert set(status["connected_peers"]) >= {o.peer_id for o in c.nodes if o is not node}
        with _one_connection(c.url) as client:
            names, local = _answered(client, c, 30)
        assert len(local) == 1, local  # one client connection (keep-alive) ...
        counts = collections.Counter(names)
        assert set(counts) == {"node0", "node1", "node2"}, counts  # ... its requests spread over all nodes
        assert all(9 <= k <= 11 for k in counts.values()), counts
        assert all(a != b for a, b in itertools.pairwise(names)), names  # round robin
        assert " is DOWN" not in c.balancer_log.read_text(errors="replace")  # the health checks pass


def test_cluster_killed_node_leaves_and_restarted_node_rejoins(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c, _one_connection(c.url) as client:
        names, _ = _answered(client, c, 3)
        assert set(names) == {"node0", "node1", "node2"}
        c.kill(1)
        assert not c.nodes[1].alive
        # Every request succeeds at once: a refused connection is redispatched to a live node
        # while the health checks mark node1 down.
        started = time.monotonic()
        names, _ = _answered(client, c, 20)
        assert "node1" not in names and set(names) == {"node0", "node2"}, names
        assert time.monotonic() - started < 10
        assert _logged(c, "nodes/s1 is DOWN")
        old_pid = c.nodes[1].proc.pid if c.nodes[1].proc else None
        c.restart(1)
        assert c.nodes[1].alive and c.nodes[1].proc is not None and c.nodes[1].proc.pid != old_pid
        deadline = time.monotonic() + 15
        back: list[str] = []
        for _ in range(100):  # the health checks (every 0.5 s, up after one success) put it back
            back += _answered(client, c, 1)[0]
            if back[-1] == "node1" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert back[-1] == "node1", back
        assert _logged(c, "nodes/s1 is UP")
        names, _ = _answered(client, c, 30)
        assert set(names) == {"node0", "node1", "node2"}, names
