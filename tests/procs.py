"""Start triomcp processes for tests: bounded waits, always killed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reliability.procs import free_port, stderr_text, wait_for_announce

__all__ = ["REPO", "TRIOMCP", "env_for", "free_port", "run_cli", "started", "stderr_text", "wait_for_announce"]

REPO = Path(__file__).resolve().parents[1]
TRIOMCP = [sys.executable, "-m", "triomcp.cli"]


def env_for(data_dir: Path, name: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOMCP_")}
    env.update({
        "TRIOMCP_DATA_DIR": str(data_dir),
        "TRIOMCP_TEST_NODE_NAME": name,
        "PYTHONPATH": f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "TRIOMCP_P2P__LISTEN": '["/ip4/127.0.0.1/tcp/0"]',
    })
    for key, value in settings.items():
        env[f"TRIOMCP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _in(netns: str | None) -> list[str]:
    """The prefix that runs a command in network namespace ``netns`` (none for this one)."""
    return ["ip", "netns", "exec", netns] if netns else []


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60, *,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_in(netns), *TRIOMCP, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], *, netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    # `ip netns exec` execs the command: the process (and the pid in its announce file) is triomcp's.
    # stderr goes to a file: a pipe nobody drains blocks a chatty process once 64 KiB are written.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*_in(netns), *TRIOMCP, *args], env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        proc.stderr_file = err  # type: ignore[attr-defined]  # read by stderr_text
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
