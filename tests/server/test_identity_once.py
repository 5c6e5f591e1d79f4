"""A server reads its node's identity once: the owner tag of its ids and its peer id cannot disagree.

Real Hypercorn on 127.0.0.1:0 and a real libp2p node; no sleeps, bounded waits.
"""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity_utils import load_identity, save_identity

from harness.mcp_http import JSON_HEADERS, initialize, modern_headers, tool_call
from tests.conftest import run_app
from tests.helpers.http import meta
from tests.helpers.mesh import mesh_settings
from tests.toolkit import register_test_tools
from triomcp._owner import owner_tag, tag_of
from triomcp.errors import ConfigError
from triomcp.p2p import IDENTITY_FILE
from triomcp.p2p.identity import peer_id_of
from triomcp.server.app import build_services, create_app
from triomcp.server.lifespan import running_services


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _minted_ids(url: str) -> tuple[str, str]:
    """A legacy session id and a task id, as the server at ``url`` mints them."""
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/mcp", headers=JSON_HEADERS, json=initialize("2025-11-25", client="raw"))
        assert r.status_code == 200, r.text
        session_id = r.headers["mcp-session-id"]
        body = tool_call("taskqueue_submit", {"task_type": "test.echo", "payload": {"x": 1}}, 1)
        r = await c.post("/mcp", headers=modern_headers("tools/call", "taskqueue_submit"),
                         json={**body, "params": {**body["params"], "_meta": meta()}})
        assert r.status_code == 200, r.text
        return session_id, r.json()["result"]["structuredContent"]["task_id"]


async def test_a_missing_identity_is_created_once_and_names_the_node_the_ids_name(tmp_path: Path) -> None:
    settings = mesh_settings(tmp_path, "a")
    key = settings.data_dir / IDENTITY_FILE
    assert not settings.data_dir.exists()
    app = create_app(settings, configure=register_test_tools)
    assert _mode(key) == 0o600 and _mode(settings.data_dir) == 0o700  # the app's read created both
    written = key.read_bytes()
    with trio.fail_after(20):
        async with run_app(app) as url:
            services = app.state.services
            node = services.node
            assert node.peer_id == peer_id_of(services.key_pair) == peer_id_of(load_identity(key))
            session_id, task_id = await _minted_ids(url)
    assert key.read_bytes() == written  # not written again when the node started
    assert tag_of(session_id) == tag_of(task_id) == owner_tag(node.peer_id)


async def test_an_identity_file_replaced_after_the_app_read_it_changes_neither_tag_nor_peer_id(tmp_path: Path) -> None:
    """Fault: another process on the same fresh data dir writes its own key between this server's
    build and its start (or an operator restores a backup then). When the identity was read twice,
    the ids named one node and the libp2p node was another: no peer could route them."""
    settings = mesh_settings(tmp_path, "a")
    app = create_app(settings, configure=register_test_tools)
    read = peer_id_of(app.state.services.key_pair)
    save_identity(create_new_key_pair(), settings.data_dir / IDENTITY_FILE)
    with trio.fail_after(20):
        async with run_app(app) as url:
            node = app.state.services.node
            assert node.peer_id == read
            session_id, task_id = await _minted_ids(url)
    assert tag_of(session_id) == tag_of(task_id) == owner_tag(node.peer_id)


async def test_a_node_whose_peer_id_is_not_its_engines_tag_does_not_start(tmp_path: Path) -> None:
    """Services assembled by hand without the identity ``build_services`` read: the node reads the
    file, which is another key by now; the lifespan refuses to run a node its ids do not name."""
    services = build_services(mesh_settings(tmp_path, "a", taskqueue={"enabled": False}))
    services.key_pair = None
    save_identity(create_new_key_pair(), services.settings.data_dir / IDENTITY_FILE)
    with trio.fail_after(20), pytest.RaisesGroup(
            pytest.RaisesExc(ConfigError, match="owner tag"), flatten_subgroups=True, allow_unwrapped=True):
        async with running_services(services):
            raise AssertionError("the services started")
