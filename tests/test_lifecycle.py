"""The process: SIGTERM drains in-flight calls and exits 0; failed startups exit non-zero; Trio only."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.mcp_http import call, requests_in_flight
from harness.procs import (
    REPO,
    env_for,
    free_port,
    run_cli,
    started,
    stderr_text,
    wait_for_announce,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.slow


def _call(url: str, tool: str, arguments: dict[str, Any], timeout: float = 30) -> httpx.Response:
    """A modern tools/call from a client that takes JSON only (no SSE)."""
    return call(url, tool, arguments, timeout, accept="application/json")


def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    env = env_for(tmp_path / "data", "drain")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env) as proc:
        wait_http(url, proc)
        queued = _call(url, "taskqueue_submit", {"task_type": "nobody.runs.this", "payload": {}}).json()
        task_id = queued["result"]["structuredContent"]["task_id"]
        answers: list[httpx.Response] = []
        # taskqueue_wait on a task nobody runs: a 2-second call in flight when SIGTERM arrives.
        caller = threading.Thread(target=lambda: answers.append(
            _call(url, "taskqueue_wait", {"task_id": task_id, "timeout_s": 2.0})))
        caller.start()
        # SIGTERM only once the server is handling the call (its own count of MCP requests in flight).
        wait_until(lambda: True if requests_in_flight(url) == 1 else None, proc, what="the call in flight",
                   timeout=10)
        proc.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        assert proc.wait(timeout=30) == 0
        stderr = stderr_text(proc)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["result"]["structuredContent"]["finished"] is False  # it ran to its own end
    assert "received SIGTERM: draining" in stderr  # the log was read
    assert "Traceback" not in stderr and "ResourceWarning" not in stderr


def test_a_port_in_use_fails_startup_with_a_non_zero_exit(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli(["serve", "--bind", f"127.0.0.1:{port}"], env_for(tmp_path / "data", "busy"))
    assert out.returncode == 1
    assert "the server stopped on an error" in out.stderr


def test_bad_settings_are_refused_with_the_key_named(tmp_path: Path) -> None:
    env = env_for(tmp_path / "data", "bad", http={"max_body_bytes": -5})
    out = run_cli(["serve"], env)
    assert out.returncode == 2 and "http.max_body_bytes" in out.stderr
    config = tmp_path / "triomcp.toml"
    config.write_text('[http]\nmax_body_bytez = 10\n')
    out = run_cli(["config", "show"], {**env_for(tmp_path / "data", "bad"), "TRIOMCP_CONFIG": str(config)})
    assert out.returncode == 2 and "http.max_body_bytez" in out.stderr


def test_more_than_one_worker_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "hypercorn.toml"
    config.write_text('worker_class = "trio"\nworkers = 2\nbind = ["127.0.0.1:0"]\n')
    out = run_cli(["serve", "--config", str(config)], env_for(tmp_path / "data", "w2"))
    assert out.returncode == 2
    assert "workers = 2" in out.stderr and "adding nodes" in out.stderr


def test_asyncio_worker_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    env = env_for(tmp_path / "data", "asyncio")
    out = subprocess.run(
        [sys.executable, "-m", "hypercorn", "--worker-class", "asyncio", "--workers", "0",
         "--bind", f"127.0.0.1:{free_port()}", "triomcp.app:app"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0
    assert "must run under Trio" in out.stderr + out.stdout


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {**env_for(tmp_path / "data", "cfg"), "TRIOMCP_MCP__REQUEST_STATE_KEY": "s3cret-value"}
    out = run_cli(["config", "show"], env)
    shown = json.loads(out.stdout)
    assert shown["mcp"]["request_state_key"] == "**********" and "s3cret" not in out.stdout


def test_standalone_node_announces_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = env_for(tmp_path / "node", "standalone")
    with started(["node"], env) as proc:
        info = wait_for_announce(tmp_path / "node", proc)
        assert info["peer_id"].startswith("12D3KooW")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_http_front_end_over_a_standalone_node_processes(tmp_path: Path) -> None:
    """The roadmap's option B with real processes: `triomcp node` and `triomcp serve` in local-node mode."""
    data = tmp_path / "data"
    node_env = env_for(data, "node")
    with started(["node"], node_env) as node:
        announced = wait_for_announce(data, node)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        front_env = env_for(data, "front", p2p__mode="local-node")
        with started(["serve", "--bind", f"127.0.0.1:{port}"], front_env) as front:
            wait_http(url, front)
            status = _call(url, "p2p_status", {}).json()["result"]["structuredContent"]
            assert status["peer_id"] == announced["peer_id"]  # the node answers, through the front end
            queued = _call(url, "taskqueue_submit", {"task_type": "tool.call",
                                                     "payload": {"tool": "server_status", "arguments": {}}}).json()
            task_id = queued["result"]["structuredContent"]["task_id"]
            waited = _call(url, "taskqueue_wait", {"task_id": task_id, "timeout_s": 20}).json()
            assert waited["result"]["structuredContent"]["task"]["state"] == "succeeded"
            front.send_signal(signal.SIGTERM)
            assert front.wait(timeout=30) == 0
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0
