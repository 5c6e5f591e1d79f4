"""Servers with real libp2p nodes in one process, authorizing and connected to each other."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.applications import Starlette

from tests.conftest import make_settings, run_app
from tests.toolkit import register_test_tools
from triomcp.mcp.registry import Registry
from triomcp.server.app import create_app

__all__ = ["RoundRobin", "mesh", "mesh_settings", "structured", "tool_calls"]


class RoundRobin(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request to the next of ``urls`` in turn, as a round-robin
    load balancer does (the real one, HAProxy, is in ``harness.balancer``); ``landed`` counts."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = [httpx.URL(u) for u in urls]
        self._inner = httpx.AsyncHTTPTransport()
        self._next = 0
        self.landed = [0] * len(urls)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = self._next % len(self._urls)
        self._next += 1
        self.landed[i] += 1
        url = self._urls[i]
        request.url = request.url.copy_with(scheme=url.scheme, host=url.host, port=url.port)
        request.headers["host"] = f"{url.host}:{url.port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def mesh_settings(tmp_path: Path, name: str, **overrides: Any) -> Any:
    return make_settings(
        tmp_path / name,
        p2p={"enabled": True, "listen": ["/ip4/127.0.0.1/tcp/0"], **overrides.pop("p2p", {})},
        taskqueue={"enabled": True, "lease_seconds": 2.0, **overrides.pop("taskqueue", {})},
        **overrides,
    )


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path, names: list[str], *, per_node: dict[str, dict[str, Any]] | None = None,
               configure: Callable[[Registry], None] = register_test_tools,
               **overrides: Any) -> AsyncIterator[dict[str, tuple[str, Starlette]]]:
    """Start one server per name, each authorizing all the others, all connected to the first.

    ``overrides`` apply to every node; ``per_node[name]`` to that node only (instead); ``configure``
    registers each node's tools (the test tools by default)."""
    per_node = per_node or {}
    apps = {n: create_app(mesh_settings(tmp_path, n, **dict(per_node.get(n, overrides))),
                          configure=configure) for n in names}
    async with contextlib.AsyncExitStack() as stack:
        urls = {n: await stack.enter_async_context(run_app(app)) for n, app in apps.items()}
        nodes = {n: app.state.services.node for n, app in apps.items()}
        for n, node in nodes.items():
            for other, other_node in nodes.items():
                if other != n:
                    node.authorized.authorize(other_node.peer_id, other)
        first = nodes[names[0]]
        with trio.fail_after(10):
            for n in names[1:]:
                await nodes[n].connect(first.listen_addrs()[0])
                await first.connect(nodes[n].listen_addrs()[0])
            for _ in range(500):  # the peer exchange connects the others too (bounded: 5 s): no dial is
                if all(len(node.connected_peers()) >= len(nodes) - 1 for node in nodes.values()):
                    break  # left in flight when a short test ends
                await trio.sleep(0.01)
        try:
            yield {n: (urls[n], apps[n]) for n in names}
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                for node in nodes.values():  # HTTP-over-libp2p streams end before the hosts close
                    await node.http.aclose()
                await trio.sleep(0.05)
    gc.collect()  # what the hosts left to the collector is collected here, in the test that used them


def structured(result: Any) -> dict[str, Any]:
    """The structured content of an official-client ``CallToolResult`` that is not an error."""
    assert result.is_error is False, result
    return dict(result.structured_content)


def tool_calls(app: Starlette, tool: str) -> float:
    """How many calls of ``tool`` the server ``app`` has counted (its metrics)."""
    registry = app.state.services.metrics.registry
    return sum(sample.value for metric in registry.collect() if metric.name == "triomcp_mcp_tool_calls"
               for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels.get("tool") == tool)
