"""The lifespan's services, started in order in one nursery and stopped in reverse.

Start: session sweeper -> task queue (+ lease maintenance) -> libp2p node (with the identity
``build_services`` read, which gave the engine's ids their owner tag) -> local workers -> mesh
workers -> ready. Stop: not ready, long-lived streams end ->
workers cancelled (each running task's lease is released, the node still up for
remote ones) -> the libp2p host closed -> everything else cancelled -> the queue
database closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio

from triomcp._owner import owner_tag
from triomcp.errors import ConfigError
from triomcp.p2p import open_node
from triomcp.server.mcp_tasks import MCP_TOOL_CALL
from triomcp.server.mesh import MeshScheduler
from triomcp.server.peer_mcp import PeerMcpHandler
from triomcp.server.services import Services
from triomcp.server.tool_tasks import TOOL_CALL, make_tool_call_handler
from triomcp.server.upstream import running_upstream
from triomcp.taskqueue import HandlerRegistry, Task, open_task_queue, run_workers

__all__ = ["SESSION_SWEEP_SECONDS", "build_handlers", "running_services"]

log = logging.getLogger("triomcp.server")

SESSION_SWEEP_SECONDS = 30.0


def build_handlers(services: Services) -> HandlerRegistry:
    handlers = HandlerRegistry()
    handlers.register(TOOL_CALL, make_tool_call_handler(services.engine))
    handlers.register(MCP_TOOL_CALL, make_tool_call_handler(services.engine, full_result=True))
    handlers.load_entry_points()
    handlers.load_settings(services.settings.taskqueue.handlers)
    return handlers


async def _sweep_sessions(services: Services) -> None:
    while True:
        await trio.sleep(SESSION_SWEEP_SECONDS)
        expired = services.engine.expire_sessions()
        if expired:
            log.info("expired %d idle sessions", expired)


@contextlib.asynccontextmanager
async def _maybe_node(services: Services) -> AsyncIterator[Any]:
    settings = services.settings
    if not settings.p2p.enabled:
        yield None
        return
    if settings.p2p.mode == "local-node":
        async with running_upstream(services) as upstream:
            services.extras["upstream"] = upstream
            yield None  # this process has no node of its own: the local node serves the tools
        return
    async with open_node(settings.p2p, settings.data_dir, frame_handler=PeerMcpHandler(
            services.engine, node=lambda: services.node, admission=services.admission), http_app=services.http_app,
            http_max_body_bytes=settings.http.max_body_bytes, key_pair=services.key_pair) as node:
        tag = services.engine.config.owner_tag
        if tag and tag != owner_tag(node.peer_id):  # an engine built with another identity than the node's
            raise ConfigError(f"the engine mints ids for owner tag {tag!r}, but this node is {node.peer_id} "
                              "(build the services with build_services, which reads the identity once)")
        async with trio.open_nursery() as drops:

            def revoked(peer_id: str) -> None:  # the streams this node keeps for it are closed now
                drops.start_soon(node.http.drop, peer_id)

            node.authorized.on_revoked.append(revoked)
            try:
                yield node
            finally:
                node.authorized.on_revoked.remove(revoked)


@contextlib.asynccontextmanager
async def running_services(services: Services) -> AsyncIterator[None]:
    settings = services.settings
    handlers = build_handlers(services)
    queue = None
    if settings.taskqueue.enabled and settings.p2p.mode == "embedded":  # else the local node owns the queue
        queue = await open_task_queue(settings.data_dir / "queue.db", settings.taskqueue,
                                      owner_tag=services.engine.config.owner_tag)
        services.queue = queue

        def publish(task: Task) -> None:
            services.engine.notify_resource_updated(f"triomcp://tasks/{task.id}")

        queue.listeners.append(publish)
        mcp_tasks = services.extras.get("mcp_tasks")
        if mcp_tasks is not None:
            queue.listeners.append(mcp_tasks.changed)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sweep_sessions, services)
            if queue is not None:
                await nursery.start(queue.run_maintenance)
            async with _maybe_node(services) as node:
                services.node = node
                holder = node.peer_id if node is not None else "local"
                tq = settings.taskqueue
                async with trio.open_nursery() as workers:
                    if queue is not None:
                        await workers.start(lambda task_status: run_workers(
                            queue, handlers, holder=holder, concurrency=tq.concurrency,
                            lease_seconds=tq.lease_seconds, task_status=task_status))
                    if node is not None and tq.enabled and tq.mesh:
                        mesh = MeshScheduler(node, queue, handlers, concurrency=tq.mesh_concurrency,
                                             lease_seconds=tq.lease_seconds)
                        services.extras["mesh"] = mesh
                        await workers.start(mesh.run)
                    services.ready = True
                    try:
                        yield
                    finally:
                        services.ready = False
                        services.stopping.set()
                        services.engine.close_listeners()
                        if node is not None:  # dial no one from now on; peers hear that this node leaves
                            await node.begin_closing()
                        workers.cancel_scope.cancel()  # running leases are released while the node is up
            services.node = None  # the host is closed
            nursery.cancel_scope.cancel()
    finally:
        if queue is not None:
            with trio.CancelScope(shield=True):
                await queue.aclose()
            services.queue = None
