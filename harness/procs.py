"""Processes on 127.0.0.1: a free port, an environment, start, wait until ready, always stop.

A child's stderr goes to a file, never to a pipe: a pipe nobody drains blocks a chatty process
in its first write once 64 KiB are buffered, holding the logging lock, and every thread that
logs after it waits for ever. Every child runs in its own session (process group), so stopping
it stops what it started. Every wait has a deadline and gives up early when the child exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import trio

__all__ = [
    "PORTS",
    "REPO",
    "TRIOMCP",
    "Process",
    "env_for",
    "free_port",
    "in_netns",
    "run_cli",
    "spawn",
    "started",
    "stderr_text",
    "stop",
    "wait_for_announce",
    "wait_http",
    "wait_http_async",
    "wait_until",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
"""The checkout: put on the children's ``PYTHONPATH`` so they import its ``tests``, ``bench``, ..."""
TRIOMCP = [sys.executable, "-m", "triomcp.cli"]
"""The ``triomcp`` command, from this interpreter."""
PORTS = range(20000, 32768)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768 and up by default).

    Never bind port 0 to find one: a port the kernel handed out as ephemeral can be handed out
    again before the child binds it, for instance to a node's own libp2p listener (bound to port 0
    before Hypercorn binds HTTP). These ports come from 20000-32767, at random.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(PORTS.start, PORTS.stop)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {PORTS.start}-{PORTS.stop - 1} on 127.0.0.1")


def env_for(data_dir: Path | None = None, name: str | None = None, **settings: Any) -> dict[str, str]:
    """The environment of a child: this one without its ``TRIOMCP_*`` settings, the checkout on
    ``PYTHONPATH``, libp2p listening on 127.0.0.1 (port 0), then the data dir, the node's name
    (``TRIOMCP_TEST_NODE_NAME``, read by the test and reliability task handlers) and ``settings``:
    ``p2p={"enabled": False}`` or ``p2p__bootstrap=[...]`` become ``TRIOMCP_P2P`` and
    ``TRIOMCP_P2P__BOOTSTRAP``; strings as they are, anything else as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOMCP_")}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["TRIOMCP_P2P__LISTEN"] = '["/ip4/127.0.0.1/tcp/0"]'
    if data_dir is not None:
        env["TRIOMCP_DATA_DIR"] = str(data_dir)
    if name is not None:
        env["TRIOMCP_TEST_NODE_NAME"] = name
    for key, value in settings.items():
        env[f"TRIOMCP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def in_netns(netns: str | None) -> list[str]:
    """The prefix that runs a command in network namespace ``netns`` (none for this one)."""
    return ["ip", "netns", "exec", netns] if netns else []


def run_cli(args: Sequence[str], env: Mapping[str, str], timeout: float = 60, *,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """``triomcp ARGS`` to completion, its output captured (a short-lived command: pipes are fine)."""
    return subprocess.run([*in_netns(netns), *TRIOMCP, *args], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)


class Process(subprocess.Popen[bytes]):
    """A child in its own session: stdout discarded, stderr written to ``log``, a file."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> None:
        super().__init__(list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.log = log


def spawn(argv: Sequence[str], env: Mapping[str, str], *, log: Path | None = None,
          netns: str | None = None) -> Process:
    """Start ``argv`` (with ``netns``: inside that namespace, through ``ip netns exec``, which
    execs it, so the pid is the command's). Its stderr goes to ``log`` (appended), or else to a
    temporary file; read it with :func:`stderr_text`. Stop it with :func:`stop`."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    err = open(log, "a+b") if log is not None else tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
    try:
        return Process([*in_netns(netns), *argv], env, err)
    except Exception:
        err.close()
        raise


def stop(proc: subprocess.Popen[Any], *, kill: bool = False, timeout: float = 10) -> int:
    """SIGTERM (or SIGKILL) the child's process group and wait for it, SIGKILL after ``timeout``
    seconds; then close its stderr file. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if isinstance(proc, Process):
        proc.log.close()
    return int(proc.returncode)


@contextlib.contextmanager
def started(args: Sequence[str], env: Mapping[str, str], log: Path | None = None, *,
            netns: str | None = None) -> Iterator[Process]:
    """``triomcp ARGS`` (see :func:`spawn`), SIGKILLed at the end of the block unless it has exited."""
    proc = spawn([*TRIOMCP, *args], env, log=log, netns=netns)
    try:
        yield proc
    finally:
        stop(proc, kill=True, timeout=30)


def stderr_text(proc: subprocess.Popen[Any], limit: int | None = None) -> str:
    """What the child wrote to stderr (the last ``limit`` characters), when it was kept: the file
    of a :class:`Process` (readable until it is stopped), or a pipe."""
    if isinstance(proc, Process):
        if proc.log.closed:
            return ""
        proc.log.seek(0)
        err: Any = proc.log.read()
    else:
        err = proc.stderr.read() if proc.stderr is not None else ""
    text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
    return text if limit is None else text[-limit:]


def _exited(what: str, proc: subprocess.Popen[Any]) -> RuntimeError:
    """The error for a child that exited before ``what`` happened, with its stderr when it was kept."""
    return RuntimeError(f"waiting for {what}: the process exited with {proc.returncode}: "
                        f"{stderr_text(proc, 4000)}".rstrip(": "))


def wait_until(ready: Callable[[], T | None], proc: subprocess.Popen[Any], *, what: str, timeout: float = 30,
               interval: float = 0.05) -> T:
    """Call ``ready`` every ``interval`` seconds until it returns something other than None, and
    return that. Raises when ``proc`` exits first, or TimeoutError after ``timeout`` seconds;
    ``what`` names what is awaited, in those errors."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise _exited(what, proc)
        value = ready()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout}s for {what}, in vain")
        time.sleep(interval)


def wait_for_announce(data_dir: Path, proc: subprocess.Popen[Any], timeout: float = 30) -> dict[str, Any]:
    """The node's announce file (``peer_id``, ``multiaddrs``, ``pid``), once ``proc`` has written it."""
    path = data_dir / "announce.json"

    def announced() -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return dict(data) if isinstance(data, dict) and data.get("pid") == proc.pid else None

    return wait_until(announced, proc, what=f"the announce file in {data_dir}", timeout=timeout)


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Wait until the server ``proc`` answers ``{url}/readyz`` with 200."""

    def ready() -> bool | None:
        try:
            return True if httpx.get(f"{url}/readyz", timeout=1).status_code == 200 else None
        except httpx.HTTPError:
            return None

    wait_until(ready, proc, what=f"{url}/readyz to answer 200", timeout=timeout)


async def wait_http_async(client: httpx.AsyncClient, url: str, proc: subprocess.Popen[Any], *,
                          interval: float = 0.05) -> None:
    """:func:`wait_http` for a Trio caller waiting on many servers at once (one ``client``); the
    caller bounds it (``trio.fail_after``)."""
    while True:
        if proc.poll() is not None:
            raise _exited(f"{url}/readyz to answer 200", proc)
        try:
            if (await client.get(f"{url}/readyz", timeout=1)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await trio.sleep(interval)
