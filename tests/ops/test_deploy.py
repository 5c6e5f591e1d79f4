"""The deployment files: systemd units verify, and the unit's ExecStart runs under socket activation."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import REPO, env_for

DEPLOY = REPO / "deploy"
UNITS = ["triomcp.service", "triomcp.socket", "triomcp-node.service"]
VENV_TRIOMCP = Path(sys.prefix) / "bin" / "triomcp"


def exec_start(unit: Path) -> list[str]:
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit} has no ExecStart")


@pytest.mark.parametrize("unit", UNITS)
def test_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian package: systemd)")
    for name in UNITS:  # a copy whose ExecStart names a binary that exists here
        text = (DEPLOY / "systemd" / name).read_text().replace("/opt/triomcp/venv/bin/triomcp", str(VENV_TRIOMCP))
        (tmp_path / name).write_text(text)
    out = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / unit)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_hypercorn_toml_has_no_read_timeout_and_one_worker() -> None:
    import tomllib

    for name in ("hypercorn.toml", "hypercorn-socket.toml"):
        config = tomllib.loads((DEPLOY / name).read_text())
        assert config["worker_class"] == "trio" and config["workers"] == 1
        assert "read_timeout" not in config
    assert tomllib.loads((DEPLOY / "hypercorn-socket.toml").read_text())["bind"] == ["fd://3"]


def test_exec_start_with_socket_activation_readiness_and_clean_stop(tmp_path: Path) -> None:
    command = exec_start(DEPLOY / "systemd" / "triomcp.service")
    assert command[0] == "/opt/triomcp/venv/bin/triomcp" and command[1] == "serve"
    config = tmp_path / "hypercorn.toml"
    shutil.copy(DEPLOY / "hypercorn-socket.toml", config)
    command = [str(VENV_TRIOMCP), *[str(config) if a == "/etc/triomcp/hypercorn.toml" else a for a in command[1:]]]

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    env = {**env_for(tmp_path / "state", "systemd"), "NOTIFY_SOCKET": str(notify_path), "LISTEN_FDS": "1"}
    fd = listener.fileno()
    # Like systemd: the listening socket arrives as fd 3.
    place_on_fd3 = ("import os, sys; fd = int(sys.argv[1]); fd == 3 or (os.dup2(fd, 3), os.close(fd)); "
                    "os.execv(sys.argv[2], sys.argv[2:])")
    proc = subprocess.Popen([sys.executable, "-c", place_on_fd3, str(fd), *command], env=env,
                            pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listener.close()  # only the child holds it now
        try:
            ready = notify.recv(4096)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"no READY=1; stderr: {proc.stderr.read() if proc.stderr else ''}") from None
        assert ready == b"READY=1"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["status"] == "alive"
        discover = httpx.post(
            f"http://127.0.0.1:{port}/mcp", timeout=10,
            headers={"content-type": "application/json", "accept": "application/json",
                     "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"},
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}))
        assert "2026-07-28" in discover.json()["result"]["supportedVersions"]
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in stderr and "ResourceWarning" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        notify.close()
        os.unlink(notify_path)


def test_local_node_drop_in_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from triomcp.settings import load_settings

    conf = (DEPLOY / "systemd" / "triomcp.service.d" / "local-node.conf").read_text()
    env = dict(line.removeprefix("Environment=").split("=", 1) for line in conf.splitlines()
               if line.startswith("Environment="))
    assert env["TRIOMCP_P2P__MODE"] == "local-node"
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("%S", "/var/lib"))
    settings = load_settings()
    assert settings.p2p.mode == "local-node" and str(settings.data_dir) == "/var/lib/triomcp-node"
    node_unit = (DEPLOY / "systemd" / "triomcp-node.service").read_text()
    assert "StateDirectory=triomcp-node" in node_unit and "User=triomcp" in node_unit
    assert "User=triomcp" in (DEPLOY / "systemd" / "triomcp.service").read_text()


def test_the_haproxy_config_is_valid_and_keeps_what_the_mesh_needs() -> None:
    """deploy/haproxy.cfg passes ``haproxy -c`` (``make haproxy``) and keeps the lines the load-balancer
    tests (harness/balancer.py) rely on: round robin, health on /readyz, abortonclose."""
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is not installed: make haproxy"
    config = DEPLOY / "haproxy.cfg"
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    for line in ("balance roundrobin", "option abortonclose", "option httpchk GET /readyz",
                 "http-check expect status 200", "option redispatch 1"):
        assert line in text
    assert "cookie" not in text.lower() and "stick" not in text.replace("stickiness", "")  # no stickiness
