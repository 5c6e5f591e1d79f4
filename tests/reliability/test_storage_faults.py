"""A locked database or a full disk, end to end: a real MCP client calls ``taskqueue_submit`` over HTTP.

The caller gets a clear ``isError`` result (never a 5xx, never a silent loss), the server keeps
serving, every acknowledged task is still there afterwards and no refused one appears. The
background loops (workers, lease expiry, prune) ride out a temporary outage.

The lock is another OS process holding ``BEGIN EXCLUSIVE`` on the node's ``queue.db``. The full
disk is a real 2 MiB tmpfs mounted as the data dir (root only); without root, or if the mount is
refused, the store's connection is patched to fail the way a full disk does (fault injection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client import Client
from starlette.applications import Starlette

from tests.conftest import make_settings, run_app
from tests.helpers.http import open_session
from tests.helpers.tasks import Legacy, modern
from tests.toolkit import GATES, STARTED, register_test_tools
from triomcp.server.app import create_app
from triomcp.server.tool_tasks import TOOL_CALL

NO_HANDLER = "storage.faults"
"""A task type no node handles: submitted tasks stay queued, so the queue holds exactly what was acked."""

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
db.close()
"""


def node_app(data_dir: Path, **taskqueue: Any) -> Starlette:
    settings = make_settings(data_dir.parent, data_dir=data_dir,
                             p2p={"enabled": True, "listen": ["/ip4/127.0.0.1/tcp/0"]},
                             taskqueue={"enabled": True, **taskqueue})
    return create_app(settings, configure=register_test_tools)


@contextlib.asynccontextmanager
async def exclusive_lock(db: Path) -> AsyncIterator[None]:
    """Another process holds ``BEGIN EXCLUSIVE`` on ``db`` until the block ends."""
    proc = await trio.lowlevel.open_process([sys.executable, "-c", LOCKER, str(db)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        seen = b""
        with trio.fail_after(10):
            while b"locked" not in seen:
                chunk = await proc.stdout.receive_some()
                assert chunk, "the locking process exited early"
                seen += chunk
        yield
        await proc.stdin.send_all(b"release\n")
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            if proc.returncode is None:
                proc.kill()  # the lock goes with the process
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()


def structured(result: Any) -> dict[str, Any]:
    assert result.is_error is False, result
    return dict(result.structured_content)


def refusal(result: Any) -> dict[str, Any]:
    """The ``{code, message}`` of a clear tool error."""
    assert result.is_error is True, result
    body = dict(result.structured_content)
    assert body["ok"] is False and set(body["error"]) >= {"code", "message"}, body
    return dict(body["error"])


def server_errors(app: Starlette) -> dict[str, float]:
    """HTTP answers the server counted with a 5xx status."""
    out: dict[str, float] = {}
    for metric in app.state.services.metrics.registry.collect():
        if metric.name == "triomcp_http_requests":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["status"].startswith("5"):
                    out[sample.labels["status"]] = out.get(sample.labels["status"], 0) + sample.value
    return out


async def all_tasks(client: Client) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        args: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = structured(await client.call_tool("taskqueue_list", args))
        out.update({t["id"]: t for t in page["tasks"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


async def check_acknowledged(client: Client, acked: dict[str, Any]) -> None:
    """Exactly the acknowledged tasks are stored, each with the payload it was acknowledged for."""
    stored = await all_tasks(client)
    assert set(stored) == set(acked), {"lost": set(acked) - set(stored), "unexpected": set(stored) - set(acked)}
    for task_id, payload in acked.items():
        got = structured(await client.call_tool("taskqueue_get", {"task_id": task_id}))
        assert got["task"]["payload"] == payload


async def submit(client: Client, payload: Any) -> Any:
    return await client.call_tool("taskqueue_submit", {"task_type": NO_HANDLER, "payload": payload})


# -- a locked database ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_locked_database_is_a_clear_error_and_nothing_acknowledged_is_lost(tmp_path: Path,
                                                                                  mode: str) -> None:
    app = node_app(tmp_path / "data")
    async with run_app(app) as url:
        queue = app.state.services.queue
        busy_ms = await queue._run(lambda: queue.store._db.execute("PRAGMA busy_timeout").fetchone()[0])
        assert busy_ms > 0  # the store waits this long for the lock, then gives up
        acked: dict[str, Any] = {}
        with trio.fail_after(60):
            async with Client(f"{url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
                for n in range(3):
                    acked[structured(await submit(client, {"n": n}))["task_id"]] = {"n": n}
                async with exclusive_lock(queue.store.path):
                    started = trio.current_time()
                    error = refusal(await submit(client, {"refused": True}))
                    assert trio.current_time() - started >= busy_ms / 1000 * 0.9  # it waited, then gave up
                    assert error["code"] == "store_unavailable"
                    assert "locked" in error["message"] and "nothing was stored" in error["message"], error
                    # Still serving while the lock is held: status, and reads (WAL readers are not blocked).
                    assert structured(await client.call_tool("p2p_status", {}))["peer_id"]
                    await check_acknowledged(client, acked)
                # The lock is gone: the server serves, submits succeed, nothing acked is lost.
                status = structured(await client.call_tool("p2p_status", {}))
                assert status["queue"]["by_state"] == {"queued": 3}
                acked[structured(await submit(client, {"after": True}))["task_id"]] = {"after": True}
                await check_acknowledged(client, acked)
        assert app.state.services.ready
        assert server_errors(app) == {}


# -- a full disk ------------------------------------------------------------------------------------
HEADROOM = 192 * 1024
"""Bytes left free after the filler: room for a few submits, not for many."""


@contextlib.contextmanager
def injected_full_disk(app: Starlette) -> Iterator[None]:
    """Fault injection: every write on the store's connection fails as on a full disk."""
    store = app.state.services.queue.store
    real = store._db

    class FullDisk:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    store._db = FullDisk()
    try:
        yield
    finally:
        store._db = real


async def mount_tmpfs(path: Path) -> bool:
    """A 2 MiB tmpfs at ``path``; False when this process may not mount one."""
    await trio.Path(path).mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    with trio.fail_after(10):
        done = await trio.run_process(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)],
                                      check=False, capture_stdout=True, capture_stderr=True)
    return done.returncode == 0


async def unmount(path: Path) -> None:
    with trio.fail_after(10):
        done = await trio.run_process(["umount", str(path)], check=False, capture_stderr=True)
        if done.returncode != 0:
            await trio.run_process(["umount", "-l", str(path)], check=True)


def fill(data_dir: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on the data dir's filesystem."""
    filler = data_dir / "filler"
    st = os.statvfs(data_dir)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        while size > 0:
            size -= f.write(chunk[:size])
    return filler


@pytest.mark.parametrize("fault", ["tmpfs", "injected"])
async def test_a_full_disk_is_a_clear_error_and_nothing_acknowledged_is_lost(tmp_path: Path, fault: str) -> None:
    data_dir = tmp_path / "data"
    real_disk = fault == "tmpfs" and await mount_tmpfs(data_dir)  # else: fall back to fault injection
    try:
        app = node_app(data_dir)
        async with run_app(app) as url:
            acked: dict[str, Any] = {}
            refused: list[dict[str, Any]] = []
            with trio.fail_after(60):
                async with Client(f"{url}/mcp") as client:
                    acked[structured(await submit(client, {"n": -1}))["task_id"]] = {"n": -1}
                    with contextlib.ExitStack() as full:
                        if real_disk:
                            filler = fill(data_dir, HEADROOM)
                            full.callback(filler.unlink)
                        else:
                            full.enter_context(injected_full_disk(app))
                        for n in range(200):  # a few fit in the headroom, then the disk is full
                            payload = {"n": n, "pad": "x" * 16_000}
                            result = await submit(client, payload)
                            if not result.is_error:
                                acked[structured(result)["task_id"]] = payload
                                continue
                            refused.append(refusal(result))
                            if len(refused) == 3:
                                break
                        assert len(refused) == 3, "the disk never filled up"
                        if real_disk:
                            assert len(acked) > 1, "the filler left no room for even one submit"
                        for error in refused:
                            assert error["code"] == "store_unavailable", error
                            assert "disk is full" in error["message"], error
                            assert "nothing was stored" in error["message"], error
                        # Still serving on a full disk: status, and reads.
                        assert structured(await client.call_tool("p2p_status", {}))["peer_id"]
                        await check_acknowledged(client, acked)
                    # Space is back: new submits succeed, and exactly the acknowledged tasks are there.
                    acked[structured(await submit(client, {"after": True}))["task_id"]] = {"after": True}
                    await check_acknowledged(client, acked)
                    assert structured(await client.call_tool("p2p_status", {}))["queue"]["by_state"] == {
                        "queued": len(acked)}
            assert app.state.services.ready
            assert server_errors(app) == {}
    finally:
        if real_disk:
            await unmount(data_dir)


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_an_mcp_task_on_a_full_disk_is_a_json_rpc_error_not_a_500(tmp_path: Path, era: str) -> None:
    """A task-augmented ``tools/call`` stores a queue task too: the same fault is a clear JSON-RPC error."""
    tag = f"storage-faults-mcp-{era}"
    GATES[tag] = trio.Event()
    GATES[tag].set()  # the task, once stored, finishes at once
    app = node_app(tmp_path / "data")
    async with run_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as c:
        with trio.fail_after(30):
            session = Legacy(c, await open_session(c)) if era == "legacy" else None

            async def create_task() -> dict[str, Any]:
                params = {"name": "job", "arguments": {"text": tag}}
                if session is not None:
                    return await session.rpc("tools/call", {**params, "task": {}})
                r = await modern(c, "tools/call", params, name="job")
                assert r.status_code == 200, r.text
                return dict(r.json())

            with injected_full_disk(app):
                refused = await create_task()
            assert refused["error"]["code"] == -32603, refused
            assert refused["error"]["data"] == {"code": "store_unavailable"}
            assert "disk is full" in refused["error"]["message"] and "nothing was stored" in refused["error"]["message"]
            created = (await create_task())["result"]
            task_id = created["task"]["taskId"] if era == "legacy" else created["taskId"]
            stored, _ = await app.state.services.queue.list_tasks()
            assert [t.id for t in stored] == [task_id]
        assert server_errors(app) == {}


# -- the background loops ---------------------------------------------------------------------------
class _Seen(logging.Handler):
    """Sets an event when the task queue logs a message starting with a given prefix."""

    def __init__(self, **prefixes: str) -> None:
        super().__init__(logging.WARNING)
        self.prefixes = prefixes
        self.events = {name: trio.Event() for name in prefixes}

    def emit(self, record: logging.LogRecord) -> None:
        for name, prefix in self.prefixes.items():
            if record.getMessage().startswith(prefix):
                self.events[name].set()


@contextlib.contextmanager
def watching_log(**prefixes: str) -> Iterator[dict[str, trio.Event]]:
    handler = _Seen(**prefixes)
    logger = logging.getLogger("triomcp.taskqueue")
    logger.addHandler(handler)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)


async def test_workers_and_lease_expiry_ride_out_a_locked_database(tmp_path: Path) -> None:
    app = node_app(tmp_path / "data", lease_seconds=1.0)
    tag = "storage-faults-loops"
    STARTED[tag], GATES[tag] = trio.Event(), trio.Event()
    async with run_app(app) as url:
        queue = app.state.services.queue
        # A short busy timeout (a real SQLite setting) so every refusal comes quickly.
        await queue._run(lambda: queue.store._db.execute("PRAGMA busy_timeout = 100"))
        with trio.fail_after(60), watching_log(worker=f"claiming {TOOL_CALL} tasks failed",
                                               maintenance="lease expiry and pruning failed") as seen:
            async with Client(f"{url}/mcp") as client:
                task_id = structured(await client.call_tool("taskqueue_submit", {
                    "task_type": TOOL_CALL, "payload": {"tool": "gate", "arguments": {"text": tag}}}))["task_id"]
                await STARTED[tag].wait()  # a local worker holds the lease (1 s, renewed every 1/3 s)
                async with exclusive_lock(queue.store.path):
                    # The handler finishes, but its outcome cannot be recorded, nor the next claim made,
                    # nor the lease renewed; the lease runs out and cannot be recovered either.
                    GATES[tag].set()
                    await seen["worker"].wait()
                    await seen["maintenance"].wait()
                    error = refusal(await submit(client, {"refused": True}))
                    assert error["code"] == "store_unavailable" and "locked" in error["message"]
                # The lock is gone: the expired lease is recovered, the task runs again and succeeds.
                waited = structured(await client.call_tool("taskqueue_wait", {"task_id": task_id, "timeout_s": 30}))
                assert waited["finished"] is True and waited["task"]["state"] == "succeeded", waited
                assert waited["task"]["attempts"] == 2
                assert queue.statistics().lease_expiries == 1
                # The workers still take new work.
                echo = structured(await client.call_tool("taskqueue_submit", {
                    "task_type": TOOL_CALL, "payload": {"tool": "echo", "arguments": {"text": "after"}}}))
                waited = structured(await client.call_tool("taskqueue_wait", {"task_id": echo["task_id"],
                                                                              "timeout_s": 30}))
                assert waited["task"]["state"] == "succeeded" and waited["task"]["result"]["text"] == "after"
                assert structured(await client.call_tool("p2p_status", {}))["peer_id"]
        assert app.state.services.ready
        assert server_errors(app) == {}
