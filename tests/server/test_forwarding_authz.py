"""Forwarding does not launder authorization: three real nodes in one process, A -> R -> B.

B lists R but not A. A reaches B's tools only through R, and B serves such a forwarded request
only if it authorizes A too, or lists R as a ``delegate`` (docs/security.md, "Forwarding and
delegation"). Loopback only; every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from mcp.client import Client

from tests.helpers.mesh import mesh, structured, tool_calls
from tests.toolkit import register_test_tools
from triomcp.mcp.engine import Engine
from triomcp.mcp.registry import Registry
from triomcp.mcp.results import modern_meta
from triomcp.p2p.identity import CLI_IDENTITY_FILE, load_or_create_identity
from triomcp.p2p.mcp_client import ON_BEHALF_OF_META_KEY, call_peer_tool
from triomcp.peer_cli import cli_node
from triomcp.server.peer_mcp import PeerMcpHandler

Via = Callable[..., Awaitable[dict[str, Any]]]


def refused_because(result: dict[str, Any], a_id: str, r_id: str, b_id: str) -> None:
    """``result`` (R's answer) is B's refusal of A's request, and says why."""
    assert result["isError"] is True, result
    error = result["structuredContent"]["error"]
    assert error["code"] == "not_authorized", error
    assert error["message"].endswith(
        f"peer {b_id}: not authorized: peer {a_id} is not in authorized_peers here, and peer {r_id}, which "
        f"forwarded its request, is not a delegate (authorize {a_id}, or mark {r_id} as a delegate: "
        f"triomcp peers authorize {r_id} --delegate)"), error


async def test_p2p_call_tool_through_a_relay_needs_the_caller_authorized_or_the_relay_a_delegate(
        tmp_path: Path) -> None:
    async with mesh(tmp_path, ["r", "a", "b"], taskqueue={"mesh": False}) as nodes:
        (url_a, app_a), (url_r, _), (_, app_b) = nodes["a"], nodes["r"], nodes["b"]
        a_node, r_node, b_node = (app.state.services.node for app in (app_a, nodes["r"][1], app_b))
        a_id, r_id, b_id = a_node.peer_id, r_node.peer_id, b_node.peer_id
        assert b_node.authorized.revoke(a_id)  # B lists R (not a delegate) and not A
        call_b = {"peer": b_id, "tool": "whoami"}

        async def via_r(caller: str = "token:alice") -> dict[str, Any]:
            """A's HTTP caller ``caller`` asks R to call B's whoami."""
            return await call_peer_tool(a_node, r_id, "p2p_call_tool", call_b, on_behalf_of=caller)

        with trio.fail_after(30):
            # The measured case, from an MCP client of A: A -> R -> B is refused, and says why.
            async with Client(f"{url_a}/mcp") as client:
                out = structured(await client.call_tool("p2p_call_tool", {
                    "peer": r_id, "tool": "p2p_call_tool", "arguments": call_b}))
            assert out["peer"] == r_id and out["is_error"] is True
            refused_because({"isError": True, "structuredContent": out["result"]}, a_id, r_id, b_id)
            refused_because(await via_r(), a_id, r_id, b_id)
            assert tool_calls(app_b, "whoami") == 0  # nothing ran on B

            # R's own (HTTP) callers still reach B through R: R vouches for them.
            async with Client(f"{url_r}/mcp") as client:
                own = structured(await client.call_tool("p2p_call_tool", call_b))
            assert own["result"]["principal"] == f"peer:{r_id}|local"

            # B marks R as a delegate: B takes R's word for A, and B's tool sees the whole chain.
            assert b_node.authorized.authorize(r_id, delegate=True)
            allowed = await via_r()
            assert allowed["isError"] is False, allowed
            assert allowed["structuredContent"]["result"]["principal"] == f"peer:{r_id}|peer:{a_id}|token:alice"

            # Withdrawn again: refused again (the file decides, at once).
            assert b_node.authorized.authorize(r_id, delegate=False)
            refused_because(await via_r(), a_id, r_id, b_id)

            # B authorizes A itself: R need not be a delegate.
            assert b_node.authorized.authorize(a_id, "a")
            direct = await via_r("token:bob")
            assert direct["structuredContent"]["result"]["principal"] == f"peer:{r_id}|peer:{a_id}|token:bob"


async def test_a_task_submitted_through_a_relay_is_refused_or_owned_by_its_original_principal(
        tmp_path: Path) -> None:
    async with mesh(tmp_path, ["r", "a", "b"], taskqueue={"mesh": False}) as nodes:
        app_a, app_r, app_b = nodes["a"][1], nodes["r"][1], nodes["b"][1]
        a_node, r_node, b_node = (app.state.services.node for app in (app_a, app_r, app_b))
        a_id, r_id, b_id = a_node.peer_id, r_node.peer_id, b_node.peer_id
        b_queue = app_b.state.services.queue
        assert b_node.authorized.revoke(a_id)

        async def via_r(tool: str, arguments: dict[str, Any], caller: str | None = "token:alice") -> dict[str, Any]:
            """A's caller ``caller`` calls R's ``tool`` (which names B as ``peer``)."""
            return await call_peer_tool(a_node, r_id, tool, {**arguments, "peer": b_id}, on_behalf_of=caller)

        submit = {"task_type": "tool.call", "payload": {"tool": "whoami", "arguments": {}}}
        with trio.fail_after(30):
            refused_because(await via_r("taskqueue_submit", submit), a_id, r_id, b_id)
            assert (await b_queue.list_tasks())[0] == []  # nothing was stored on B

            assert b_node.authorized.authorize(r_id, delegate=True)
            submitted = await via_r("taskqueue_submit", submit)
            assert submitted["isError"] is False, submitted
            task_id = submitted["structuredContent"]["task_id"]
            assert submitted["structuredContent"]["owner"] == b_id
            alice = f"peer:{r_id}|peer:{a_id}|token:alice"
            assert (await b_queue.get(task_id)).submitter == alice  # the original principal, by its path

            # alice reads it back through R; the task ran on B as alice.
            waited = await via_r("taskqueue_wait", {"task_id": task_id, "timeout_s": 20})
            task = waited["structuredContent"]["task"]
            assert waited["structuredContent"]["finished"] is True and task["state"] == "succeeded"
            assert task["result"]["principal"] == alice
            listed = await via_r("taskqueue_list", {})
            assert [t["id"] for t in listed["structuredContent"]["tasks"]] == [task_id]

            # Nobody else sees it: not another caller of A, not A itself, not R's own callers.
            for caller in ("token:bob", None):
                other = await via_r("taskqueue_get", {"task_id": task_id}, caller)
                assert other["structuredContent"]["error"]["code"] == "task_not_found", other
            # An HTTP client of R that names B is served by B itself, over HTTP over libp2p, as one of
            # B's own HTTP clients (triomcp.server.relay): with the same rights as a client that asked
            # B directly, never R's. B runs with authorization off here, so an anonymous client sees
            # every task, through R or not; with it on, B checks the client's own token.
            async with Client(f"{nodes['r'][0]}/mcp") as client, Client(f"{nodes['b'][0]}/mcp") as direct:
                r_own = await client.call_tool("taskqueue_get", {"task_id": task_id, "peer": b_id})
                b_own = await direct.call_tool("taskqueue_get", {"task_id": task_id})
            assert r_own.structured_content == b_own.structured_content
            assert app_r.state.services.relay.statistics.relayed >= 1


async def test_the_relays_own_cli_acts_as_the_relay(tmp_path: Path) -> None:
    # R's CLI identity (R's data dir) is R's operator: what it asks R to forward is R's own request.
    cli_key = tmp_path / "r" / "data" / CLI_IDENTITY_FILE
    cli_key.parent.mkdir(mode=0o700, parents=True)
    load_or_create_identity(cli_key)
    async with mesh(tmp_path, ["r", "b"], taskqueue={"mesh": False}) as nodes:
        app_r, app_b = nodes["r"][1], nodes["b"][1]
        r_node, b_node = app_r.state.services.node, app_b.state.services.node
        assert not b_node.authorized.is_delegate(r_node.peer_id)
        with trio.fail_after(30):
            async with cli_node(app_r.state.services.settings) as cli:
                assert not b_node.authorized.is_authorized(cli.peer_id)
                await cli.connect(r_node.listen_addrs()[0])
                result = await call_peer_tool(cli, r_node.peer_id, "p2p_call_tool",
                                              {"peer": b_node.peer_id, "tool": "whoami"})
        assert result["isError"] is False, result
        assert result["structuredContent"]["result"]["principal"] == f"peer:{r_node.peer_id}|local"


async def test_a_handler_that_cannot_check_yet_refuses_forwarded_frames_only() -> None:
    registry = Registry()
    register_test_tools(registry)
    handler = PeerMcpHandler(Engine(registry))  # no node: as while the node starts

    async def frame(behalf: str) -> dict[str, Any]:
        params = {"name": "whoami", "arguments": {}, "_meta": {**modern_meta(), ON_BEHALF_OF_META_KEY: behalf}}

        async def notify(note: dict[str, Any]) -> None:
            raise AssertionError(note)

        answer = await handler({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params},
                               peer_id="12D3KooWsender", notify=notify)
        assert answer is not None and answer["id"] == 7
        return answer

    served = await frame("token:alice")
    assert served["result"]["structuredContent"]["principal"] == "peer:12D3KooWsender|token:alice"
    refused = await frame("peer:12D3KooWsomeone|local")
    assert refused["error"] == {"code": -32001, "message": "not authorized: this node is starting and cannot "
                                                           "check forwarded requests yet"}
