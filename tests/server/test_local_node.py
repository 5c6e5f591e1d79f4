"""``p2p.mode = "local-node"``: the HTTP server fronts a standalone node; same tools, same results."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client import Client

from harness.mcp_http import modern_call
from tests.conftest import make_settings, run_app
from tests.helpers.mesh import mesh_settings, structured
from tests.toolkit import register_test_tools
from triomcp.server.app import build_services, create_app
from triomcp.server.lifespan import running_services


def front_settings(tmp_path: Path, name: str) -> Any:
    return make_settings(tmp_path / name, p2p={"enabled": True, "mode": "local-node"},
                         taskqueue={"enabled": True})


@contextlib.asynccontextmanager
async def served(tmp_path: Path, mode: str) -> AsyncIterator[tuple[str, str]]:
    """Yields (HTTP URL, peer id of the node that serves the tools)."""
    if mode == "embedded":
        app = create_app(mesh_settings(tmp_path, "n"), configure=register_test_tools)
        async with run_app(app) as url:
            yield url, app.state.services.node.peer_id
        return
    # The standalone node, as `triomcp node` runs it, and an HTTP front end on the same data dir.
    node_services = build_services(mesh_settings(tmp_path, "n"), configure=register_test_tools)
    async with running_services(node_services):
        front = front_settings(tmp_path, "n")
        app = create_app(front, configure=register_test_tools)
        async with run_app(app) as url:
            with trio.fail_after(20):
                await app.state.services.extras["upstream"].connected.wait()
            async with httpx.AsyncClient(base_url=url, timeout=5) as c:
                assert (await c.get("/readyz")).json() == {"ready": True, "local_node": True}
            yield url, node_services.node.peer_id


@pytest.mark.parametrize("mode", ["embedded", "local-node"])
async def test_same_tools_same_results(tmp_path: Path, mode: str) -> None:
    async with served(tmp_path, mode) as (url, node_id):
        with trio.fail_after(30):
            async with Client(f"{url}/mcp") as client:
                status = structured(await client.call_tool("p2p_status", {}))
                assert status["peer_id"] == node_id  # the node that owns the identity answers
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"p2p_status", "taskqueue_submit", "echo"} <= names
                submitted = structured(await client.call_tool("taskqueue_submit", {
                    "task_type": "tool.call", "payload": {"tool": "echo", "arguments": {"text": mode}}}))
                waited = structured(await client.call_tool("taskqueue_wait", {
                    "task_id": submitted["task_id"], "timeout_s": 20}))
                assert waited["task"]["state"] == "succeeded"
                assert waited["task"]["result"] == {"ok": True, "text": mode}
                resource = await client.read_resource(f"triomcp://tasks/{submitted['task_id']}")
                text: Any = resource.contents[0]
                assert submitted["task_id"] in text.text
                failed = await client.call_tool("fail", {"text": "x"})
                assert failed.is_error and failed.structured_content["error"]["code"] == "on_purpose"
                echoed = structured(await client.call_tool("echo", {"text": "hi"}))
                assert echoed == {"ok": True, "text": "hi"}


async def test_front_end_is_not_ready_without_its_node(tmp_path: Path) -> None:
    front = front_settings(tmp_path, "lonely")
    app = create_app(front, configure=register_test_tools)
    async with run_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "local_node": False}
        headers, body = modern_call("p2p_status", {}, accept="application/json")
        r = await c.post("/mcp", json=body, headers=headers)
        error = r.json()["result"]["structuredContent"]["error"]
        assert error["code"] == "local_node_unavailable" and "triomcp node" in error["message"]
