"""Real triomcp processes on 127.0.0.1: start, wait ready, call, measure, always kill."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TRIOMCP = [sys.executable, "-m", "triomcp.cli"]
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
HANDLERS = {"rel.record": "reliability.handlers:record"}


def free_port() -> int:
    """A free TCP port below the kernel's ephemeral range (shared by the tests and benchmarks).

    A port the kernel handed out as ephemeral can be handed out again to a node's own libp2p
    listener (bound to port 0 before Hypercorn binds HTTP), so these ports come from 20000-32767.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-32767 on 127.0.0.1")


def env_for(data_dir: Path, name: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOMCP_")}
    env.update({
        "TRIOMCP_DATA_DIR": str(data_dir),
        "TRIOMCP_TEST_NODE_NAME": name,
        "TRIOMCP_LOG_LEVEL": "WARNING",
        "PYTHONPATH": f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "TRIOMCP_P2P__LISTEN": '["/ip4/127.0.0.1/tcp/0"]',
    })
    for key, value in settings.items():
        env[f"TRIOMCP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def in_netns(netns: str | None) -> list[str]:
    """The prefix that runs a command in network namespace ``netns`` (none for this one)."""
    return ["ip", "netns", "exec", netns] if netns else []


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60, *,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*in_netns(netns), *TRIOMCP, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], log: Path | None = None, *,
            netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A triomcp process, killed at the end. Its stderr goes to ``log`` or else to a temporary file
    (read either with :func:`stderr_text`), never to a pipe: a pipe nobody drains blocks a chatty
    process once 64 KiB are written. With ``netns``, ``ip netns exec`` execs the command, so the
    process (and the pid in its announce file) is triomcp's."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a+b") if log is not None else tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*in_netns(netns), *TRIOMCP, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        proc.stderr_file = err  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def stderr_text(proc: subprocess.Popen[Any]) -> str:
    """What the process wrote to stderr, when it was kept (a file set as ``proc.stderr_file``, or a pipe)."""
    kept = getattr(proc, "stderr_file", None)
    if kept is not None:
        kept.seek(0)
        err = kept.read()
    else:
        err = proc.stderr.read() if proc.stderr is not None else ""
    return err.decode(errors="replace") if isinstance(err, bytes) else str(err)


def _exited(what: str, proc: subprocess.Popen[Any]) -> RuntimeError:
    """The error for a process that exited early, with its stderr when it was kept."""
    err = stderr_text(proc)
    return RuntimeError(f"the {what} exited with {proc.returncode}: {err}".rstrip(": "))


def wait_for_announce(data_dir: Path, proc: subprocess.Popen[Any], timeout: float = 30) -> dict[str, Any]:
    """The node's announce file, once the node ``proc`` has written it."""
    deadline = time.monotonic() + timeout
    path = data_dir / "announce.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exited("node", proc)
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                data = {}
            if data.get("pid") == proc.pid:
                return dict(data)
        time.sleep(0.05)
    raise TimeoutError(f"no announce file in {data_dir} after {timeout}s")


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Wait until the server ``proc`` answers ``/readyz`` with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exited("server", proc)
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (Linux), None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def modern_call(tool: str, arguments: dict[str, Any], ident: int | str = 1) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of a modern-era (stateless) tools/call."""
    body = {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": tool}
    return headers, body


def call(url: str, tool: str, arguments: dict[str, Any], timeout: float = 30) -> httpx.Response:
    headers, body = modern_call(tool, arguments)
    return httpx.post(f"{url}/mcp", json=body, headers=headers, timeout=timeout)


def structured(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    if "result" not in data:
        raise RuntimeError(f"not a result: {data}")
    return dict(data["result"].get("structuredContent") or {})


def answers_valid_call(url: str) -> bool:
    """The server answers ``server_status`` with a result."""
    try:
        response = call(url, "server_status", {}, timeout=10)
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


def spec_shaped_error(data: Any) -> bool:
    """A JSON-RPC 2.0 error response: ``jsonrpc`` "2.0", ``error.code`` int, ``error.message`` str."""
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0" or "id" not in data:
        return False
    error = data.get("error")
    return (isinstance(error, dict) and isinstance(error.get("code"), int) and not isinstance(error.get("code"), bool)
            and isinstance(error.get("message"), str))
