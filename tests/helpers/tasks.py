"""MCP tasks spoken raw over HTTP (httpx), in both eras: the official SDK client has no tasks support."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.helpers.http import meta, modern_headers

__all__ = ["RELATED", "TASKS_EXT", "Legacy", "modern", "poll_until", "tasks_meta", "waiting_for_finish"]

TASKS_EXT = "io.modelcontextprotocol/tasks"
RELATED = "io.modelcontextprotocol/related-task"


def tasks_meta() -> dict[str, Any]:
    """A modern ``_meta`` from a client that declares the tasks extension."""
    return meta(**{"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXT: {}}}})


class Legacy:
    """A raw legacy-era session."""

    def __init__(self, c: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.c, self.headers, self.next_id = c, headers, 10

    async def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        r = await self.c.post("/mcp", headers={**self.headers, "accept": "application/json"},
                              json={"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def modern(c: httpx.AsyncClient, method: str, params: dict[str, Any], *, name: str | None = None,
                 with_ext: bool = True, headers: dict[str, str] | None = None) -> httpx.Response:
    """A modern request (JSON answer), from a client with the tasks extension unless ``with_ext`` is False."""
    h = {**modern_headers(method, name), "accept": "application/json", **(headers or {})}
    body = {"jsonrpc": "2.0", "id": 1, "method": method,
            "params": {**params, "_meta": tasks_meta() if with_ext else meta()}}
    return await c.post("/mcp", headers=h, json=body)


async def poll_until(c: httpx.AsyncClient, task_id: str, statuses: set[str], *, polls: int = 500) -> dict[str, Any]:
    """``tasks/get`` until the task's status is one of ``statuses`` (bounded: ``polls`` x 10 ms), as a
    client polls at the task's ``pollIntervalMs``."""
    for _ in range(polls):
        got: dict[str, Any] = (await modern(c, "tasks/get", {"taskId": task_id}, name=task_id)).json()["result"]
        if got["status"] in statuses:
            return got
        await trio.sleep(0.01)
    raise AssertionError(f"task {task_id} never reached {statuses}")


def waiting_for_finish(queue: Any, task_id: str) -> trio.Event:
    """An event set once something in the server (``tasks/result``, say) starts waiting, on
    ``queue``, for the task ``task_id`` to finish. Wraps the queue's ``wait_finished`` to observe
    that moment; what it returns is unchanged."""
    entered = trio.Event()
    wait_finished = queue.wait_finished

    async def observed(waited_id: str) -> Any:
        if waited_id == task_id:
            entered.set()
        return await wait_finished(waited_id)

    queue.wait_finished = observed
    return entered
