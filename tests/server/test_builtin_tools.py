"""The built-in tools: what ``tools/list`` says of them is pinned, and each tool runs alone.

The snapshot (``builtin_tools.json``) is every built-in tool's wire object (name, description,
inputSchema, outputSchema, annotations, execution) plus its authorization group and when it
becomes a task, and the built-in resources and templates, as ``tools/list``,
``resources/list`` and ``resources/templates/list`` serve them to a legacy session of a node
with MCP tasks (the one case where ``execution`` is listed). A change to any of them is a
change clients see: regenerate on purpose with ``python -m tests.server.test_builtin_tools``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from tests.conftest import make_settings
from tests.mcp.helpers import initialize, post
from triomcp import __version__, peer_cli
from triomcp.errors import TaskNotFound, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Reply
from triomcp.mcp.registry import Registry
from triomcp.mcp.results import tool_failure, tool_success
from triomcp.p2p import Node, NodeStatistics
from triomcp.p2p.mcp_client import ON_BEHALF_OF_META_KEY
from triomcp.server.app import build_services
from triomcp.server.services import Services
from triomcp.server.tools import cache, p2p, register_builtin_tools, status, taskqueue
from triomcp.settings import P2PSettings, TaskQueueSettings
from triomcp.taskqueue import open_task_queue
from triomcp.testing import RecordingOutbound, make_tool_context

SNAPSHOT = Path(__file__).with_name("builtin_tools.json")
LEGACY = "2025-11-25"


def _listed(engine: Engine, session: str, method: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while True:
        reply = post(engine, {"jsonrpc": "2.0", "id": len(items) + 1, "method": method, "params": params},
                     {"mcp-session-id": session, "mcp-protocol-version": LEGACY})
        assert isinstance(reply, Reply) and reply.status == 200, reply
        result = json.loads(reply.body)["result"] if isinstance(reply.body, bytes) else reply.body["result"]
        items.extend(result[key])
        if "nextCursor" not in result:
            return items
        params = {"cursor": result["nextCursor"]}


def current() -> dict[str, Any]:
    """What the built-in tools, resources and templates look like today (no plugins)."""
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(make_settings(Path(tmp), taskqueue={"enabled": True},
                                                mcp={"plugins_enabled": []}))
    engine, registry = services.engine, services.engine.registry
    session = initialize(engine, LEGACY)
    tools = []
    for wire in _listed(engine, session, "tools/list", "tools"):
        tool = registry.get_tool(wire["name"])
        assert tool is not None
        tools.append({**wire, "group": tool.group, "taskStart": tool.task_start})
    return {
        "tools": tools,
        "resources": _listed(engine, session, "resources/list", "resources"),
        "resourceTemplates": _listed(engine, session, "resources/templates/list", "resourceTemplates"),
    }


def test_tools_list_matches_the_snapshot() -> None:
    expected = json.loads(SNAPSHOT.read_text())
    got = json.loads(json.dumps(current()))
    assert [t["name"] for t in got["tools"]] == [t["name"] for t in expected["tools"]]
    for mine, pinned in zip(got["tools"], expected["tools"], strict=True):
        assert mine == pinned, mine["name"]
    assert got == expected


if __name__ == "__main__":  # python -m tests.server.test_builtin_tools: rewrite the snapshot
    SNAPSHOT.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")


# -- each tool, called as a plain function ------------------------------------------------------

def context(state: Any, *, principal: str | None = None) -> ToolContext:
    return make_tool_context(era="modern", principal=principal, app_state=state)


class Allowed:
    def __init__(self, peers: set[str]) -> None:
        self.peers = peers

    def is_authorized(self, peer_id: str) -> bool:
        return peer_id in self.peers

    def is_listed(self, peer_id: str) -> bool:
        return peer_id in self.peers

    def is_delegate(self, peer_id: str) -> bool:
        return False

    def is_local(self, peer_id: str) -> bool:
        return False


class FakeNode:
    """A :class:`~triomcp.server.seams.MeshNode` in memory: peers answer ``tools/call`` from ``answers``."""

    def __init__(self, peer_id: str = "12D3KooWself", connected: tuple[str, ...] = ()) -> None:
        self.peer_id = peer_id
        self.settings = P2PSettings()
        self.authorized = Allowed(set(connected))
        self.connected = list(connected)
        self.answers: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.notes: list[dict[str, Any]] = []
        """Notifications the next call sends before its answer."""

    def listen_addrs(self) -> list[str]:
        return [f"/ip4/127.0.0.1/tcp/4001/p2p/{self.peer_id}"]

    def connected_peers(self) -> list[str]:
        return sorted(self.connected)

    def known_peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": p, "addrs": [], "connected": True, "connections": [{"kind": "direct", "addr": "?"}],
                 "authorized": True} for p in self.connected]

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(self.peer_id, len(self.connected), 0, 0, 0)

    def relay_status(self) -> dict[str, Any]:
        return {"service": {"service": False}, "reservations": [], "relayed_addrs": []}

    async def connect(self, multiaddr: str) -> str:
        peer = multiaddr.rsplit("/p2p/", 1)[1]
        self.connected.append(peer)
        return peer

    async def ping(self, peer_id: str) -> float:
        return 0.0123

    async def wait_peers_changed(self) -> None:
        await trio.sleep_forever()

    async def call(self, peer_id: str, method: str, params: dict[str, Any], *,
                   on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
        assert method == "tools/call"
        self.calls.append((peer_id, params))
        while self.notes and on_notification is not None:
            await on_notification(self.notes.pop(0))
        return self.answers[(peer_id, params["name"])]


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return build_services(make_settings(tmp_path, mcp={"plugins_enabled": []}))


@pytest.fixture
async def queued(services: Services, tmp_path: Path) -> AsyncIterator[Services]:
    """``services`` with a real task queue."""
    queue = await open_task_queue(tmp_path / "queue.db", TaskQueueSettings())
    services.queue = queue
    try:
        yield services
    finally:
        services.queue = None
        await queue.aclose()


def test_every_tool_is_a_module_level_function_registered_from_its_list() -> None:
    registry = Registry()
    register_builtin_tools(registry)
    listed = [tool for module in (status, p2p, taskqueue, cache) for tool in module.TOOLS]
    for tool in listed:
        module = sys.modules[tool.fn.__module__]
        assert getattr(module, tool.fn.__name__) is tool.fn
        registered = registry.get_tool(tool.fn.__name__)
        assert registered is not None and registered.fn is tool.fn
    assert sorted(t.fn.__name__ for t in listed) == [t.name for t in registry.tools()]


async def test_a_context_without_services_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="needs the node's Services"):
        await status.server_status(status.NoArguments(), context(None))


async def test_server_status_and_p2p_tools_on_a_node_in_memory(services: Services) -> None:
    shown = await status.server_status(status.NoArguments(), context(services))
    assert shown.version == __version__ and shown.eras["modern"]
    with pytest.raises(ToolError) as off:
        await p2p.p2p_status(p2p.NoArguments(), context(services))
    assert off.value.code == "p2p_disabled"
    node = FakeNode(connected=("12D3KooWother",))
    services.node = node
    ctx = context(services)
    here = await p2p.p2p_status(p2p.NoArguments(), ctx)
    assert here.peer_id == node.peer_id and here.connected_peers == ["12D3KooWother"] and here.queue is None
    assert here.relay == node.relay_status()
    assert (await p2p.p2p_peers(p2p.NoArguments(), ctx)).peers[0]["peer_id"] == "12D3KooWother"
    dialed = await p2p.p2p_connect(p2p.ConnectArgs(multiaddr="/ip4/10.0.0.2/tcp/1/p2p/12D3KooWthird"), ctx)
    assert dialed.peer_id == "12D3KooWthird"
    assert (await p2p.p2p_ping(p2p.PingArgs(peer="12D3KooWother"), ctx)).rtt_ms == 12.3
    assert json.loads(await p2p.peers_resource(ctx))[0]["peer_id"] == "12D3KooWother"


async def test_queue_tools_submit_list_and_cancel_for_their_submitter_only(queued: Services) -> None:
    alice, bob = context(queued, principal="token:alice"), context(queued, principal="token:bob")
    submitted = await taskqueue.taskqueue_submit(taskqueue.SubmitArgs(task_type="t.x", payload={"n": 1}), alice)
    assert submitted.owner == "local" and submitted.state == "queued"
    ref = taskqueue.TaskRef(task_id=submitted.task_id)
    assert (await taskqueue.taskqueue_get(ref, alice)).task["payload"] == {"n": 1}
    with pytest.raises(TaskNotFound):
        await taskqueue.taskqueue_get(ref, bob)
    assert [t["id"] for t in (await taskqueue.taskqueue_list(taskqueue.ListArgs(), alice)).tasks] == [ref.task_id]
    assert (await taskqueue.taskqueue_list(taskqueue.ListArgs(), bob)).tasks == []
    assert (await taskqueue.taskqueue_cancel(ref, alice)).task["state"] == "cancelled"
    waited = await taskqueue.taskqueue_wait(taskqueue.WaitArgs(task_id=ref.task_id), alice)
    assert waited.finished


async def test_worker_tools_claim_progress_and_complete_with_the_next_claim(queued: Services) -> None:
    ctx = context(queued)
    first = await taskqueue.taskqueue_submit(taskqueue.SubmitArgs(task_type="t.w"), ctx)
    second = await taskqueue.taskqueue_submit(taskqueue.SubmitArgs(task_type="t.w"), ctx)
    claimed = await taskqueue.taskqueue_claim(taskqueue.ClaimArgs(task_types=["t.w"], holder="w1"), ctx)
    assert claimed.lease is not None and claimed.lease["task"]["lease_holder"] == "local/w1"
    lease = taskqueue.LeaseRef(task_id=claimed.lease["task"]["id"], token=claimed.lease["token"])
    assert lease.task_id == first.task_id
    assert not (await taskqueue.taskqueue_renew(lease, ctx)).cancel_requested
    progressed = await taskqueue.taskqueue_progress(taskqueue.ProgressArgs(**lease.model_dump(), fraction=0.5), ctx)
    assert progressed.task["progress"] == 0.5
    done = await taskqueue.taskqueue_complete(taskqueue.CompleteArgs(
        **lease.model_dump(), result={"ok": 1}, claim_next=taskqueue.ClaimNext(task_types=["t.w"], holder="w1")), ctx)
    assert done.task["state"] == "succeeded" and done.next_lease is not None
    assert done.next_lease["task"]["id"] == second.task_id


async def test_a_task_on_another_peer_is_asked_of_that_peer(queued: Services) -> None:
    node = FakeNode()
    queued.node = node
    outbound = RecordingOutbound()
    ctx = make_tool_context(era="modern", principal="token:alice", app_state=queued, outbound=outbound)
    node.answers[("12D3KooWother", "taskqueue_get")] = tool_success({"task": {"id": "t1", "state": "queued"}})
    node.notes.append({"method": "notifications/progress", "params": {"progress": 1, "total": 2}})
    got = await taskqueue.taskqueue_get(taskqueue.TaskRef(task_id="t1", peer="12D3KooWother"), ctx)
    assert got.task == {"id": "t1", "state": "queued"}
    assert [(p["progress"], p["total"]) for p in outbound.progress] == [(1.0, 2)]  # the peer's, relayed
    peer, params = node.calls[-1]
    assert peer == "12D3KooWother" and params["arguments"] == {"task_id": "t1"}  # peer is not passed on
    assert params["_meta"][ON_BEHALF_OF_META_KEY] == "token:alice"
    node.answers[("12D3KooWother", "taskqueue_cancel")] = tool_failure("task_not_found", "no task t1")
    with pytest.raises(ToolError, match="on peer 12D3KooWother: no task t1") as failed:
        await taskqueue.taskqueue_cancel(taskqueue.TaskRef(task_id="t1", peer="12D3KooWother"), ctx)
    assert failed.value.code == "task_not_found"
    mine = await taskqueue.taskqueue_submit(taskqueue.SubmitArgs(task_type="t.x", peer=node.peer_id), ctx)
    assert mine.owner == node.peer_id and len(node.calls) == 2  # its own peer id: run here


async def test_cache_tools_and_replication_to_connected_authorized_peers(services: Services) -> None:
    ctx = context(services)
    assert not (await cache.cache_get(cache.GetArgs(key="k"), ctx)).found
    stored = await cache.cache_set(cache.SetArgs(key="k", value=[1, 2], replicate=True), ctx)
    assert stored.replicated_to == [] and stored.replication_failed == []  # no node: nothing to replicate to
    assert (await cache.cache_get(cache.GetArgs(key="k"), ctx)).value == [1, 2]
    node = FakeNode(connected=("12D3KooWa", "12D3KooWb"))
    node.answers[("12D3KooWa", "cache_set")] = tool_success({"key": "k"})
    node.answers[("12D3KooWb", "cache_set")] = tool_failure("too_big", "no room")
    services.node = node
    stored = await cache.cache_set(cache.SetArgs(key="k", value=3, replicate=True), ctx)
    assert stored.replicated_to == ["12D3KooWa"] and stored.replication_failed == ["12D3KooWb"]
    node.answers[("12D3KooWa", "cache_delete")] = tool_success({"deleted": True})
    node.answers[("12D3KooWb", "cache_delete")] = tool_success({"deleted": False})
    deleted = await cache.cache_delete(cache.DeleteArgs(key="k", replicate=True), ctx)
    assert deleted.deleted and deleted.replicated_to == ["12D3KooWa", "12D3KooWb"]


async def test_the_cli_reads_a_peer_tool_result_with_the_one_codec() -> None:
    node = FakeNode()
    node.answers[("12D3KooWother", "server_status")] = tool_success({"version": "1"})
    node.answers[("12D3KooWother", "broken")] = tool_failure("nope", "it broke")
    assert await peer_cli.tool(cast(Node, node), "12D3KooWother", "server_status", {}) == {"version": "1"}
    with pytest.raises(ToolError, match=r"^it broke$") as failed:
        await peer_cli.tool(cast(Node, node), "12D3KooWother", "broken", {})
    assert failed.value.code == "nope"
