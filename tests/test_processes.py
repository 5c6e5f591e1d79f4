"""Separate processes: the CLI against a running server, and a worker killed mid-task.

Synchronous tests (subprocesses and bounded waits); loopback only.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from harness.procs import env_for, free_port, run_cli, started, wait_for_announce, wait_until

pytestmark = pytest.mark.slow


def test_cli_against_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "server"
    env = env_for(data, "server")
    with started(["serve", "--bind", f"127.0.0.1:{free_port()}"], env) as proc:
        announced = wait_for_announce(data, proc)
        peer_id = announced["peer_id"]
        assert run_cli(["id"], env).stdout.splitlines()[0] == peer_id
        out = run_cli(["submit", "tool.call", '{"tool": "p2p_status", "arguments": {}}', "--wait",
                       "--timeout", "20"], env)
        assert out.returncode == 0, out.stderr
        task = json.loads(out.stdout)
        assert task["state"] == "succeeded" and task["result"]["peer_id"] == peer_id
        shown = run_cli(["task", task["id"]], env)
        assert json.loads(shown.stdout)["result"] == task["result"]
        called = run_cli(["call", peer_id, "server_status"], env)
        assert called.returncode == 0 and json.loads(called.stdout)["ok"] is True
        pinged = run_cli(["ping", peer_id, "--count", "1"], env)
        assert pinged.returncode == 0 and pinged.stdout.strip().endswith("ms")
        bad = run_cli(["call", peer_id, "no_such_tool"], env)
        assert bad.returncode == 1 and "Unknown tool: no_such_tool" in bad.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _task(env: dict[str, str], task_id: str) -> dict[str, object]:
    out = run_cli(["task", task_id], env)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _task_in(env: dict[str, str], task_id: str, states: set[str]) -> dict[str, object] | None:
    """The task, once its state is one of ``states`` (else None: ask again)."""
    task = _task(env, task_id)
    return task if task["state"] in states else None


def test_worker_killed_mid_task_another_worker_finishes_it(tmp_path: Path) -> None:
    handlers = {"test.sleep": "tests.handlers:sleep_then_answer"}
    owner_env = env_for(tmp_path / "owner", "owner", taskqueue={
        "lease_seconds": 2.0, "handlers": handlers, "concurrency": {"*": 1, "test.sleep": 0}})
    worker_dirs = {name: tmp_path / name for name in ("w1", "w2")}
    with started(["serve", "--bind", f"127.0.0.1:{free_port()}"], owner_env) as owner:
        owner_info = wait_for_announce(tmp_path / "owner", owner)
        worker_ids = {name: run_cli(["id"], env_for(d, name)).stdout.split()[0] for name, d in worker_dirs.items()}
        for name, peer in worker_ids.items():
            assert run_cli(["peers", "authorize", peer, "--label", name], owner_env).returncode == 0
            assert run_cli(["peers", "authorize", owner_info["peer_id"]], env_for(worker_dirs[name], name)).returncode == 0
        worker_env = {
            name: env_for(d, name, taskqueue={"lease_seconds": 2.0, "handlers": handlers, "concurrency": {"*": 1}},
                          p2p__bootstrap=[owner_info["multiaddrs"][0]])
            for name, d in worker_dirs.items()
        }
        with started(["node"], worker_env["w1"]) as w1, started(["node"], worker_env["w2"]) as w2:
            procs = {"w1": w1, "w2": w2}
            for name in procs:
                wait_for_announce(worker_dirs[name], procs[name])
            submitted = run_cli(["submit", "test.sleep", '{"seconds": 5}'], owner_env)
            assert submitted.returncode == 0, submitted.stderr
            task_id = str(json.loads(submitted.stdout)["id"])
            task = wait_until(lambda: _task_in(owner_env, task_id, {"leased"}), owner,
                              what="a worker to claim the task", timeout=30, interval=0.2)
            holder = str(task["lease_holder"])
            victim = next(name for name, peer in worker_ids.items() if peer in holder)
            survivor = next(name for name in procs if name != victim)
            os.kill(procs[victim].pid, signal.SIGKILL)
            task = wait_until(lambda: _task_in(owner_env, task_id, {"succeeded", "failed", "dead"}), owner,
                              what="the task to finish", timeout=60, interval=0.3)
            assert task["state"] == "succeeded"
            assert task["attempts"] == 2  # the killed attempt, then the one that finished
            assert task["result"]["node"] == survivor  # type: ignore[index]
            procs[survivor].send_signal(signal.SIGTERM)
            assert procs[survivor].wait(timeout=30) == 0
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=30) == 0
