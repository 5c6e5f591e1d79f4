"""Revoking a peer of a mesh: relayed requests stop at once, in both directions.

Two servers with real libp2p nodes in one process (``tests.helpers.mesh``), each relaying to the
other over pooled HTTP-over-libp2p streams; then ``a`` revokes ``b``. Bounded waits only.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from harness.mcp_http import tool_call
from tests.helpers.http import open_session
from tests.helpers.mesh import mesh

# As in test_relay.py: closing in-process hosts right after relayed requests sometimes leaves one
# libp2p socket to the garbage collector (py-libp2p 0.8.1's teardown race, not the relay's).
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


async def test_a_revoked_peer_relays_nothing_more_and_the_revoking_node_drops_its_streams(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["a", "b"]) as apps:
        (url_a, app_a), (url_b, app_b) = apps.values()
        node_a, node_b = app_a.state.services.node, app_b.state.services.node
        with trio.fail_after(30):
            async with httpx.AsyncClient() as c:
                c.base_url = httpx.URL(url_a)
                on_a = await open_session(c)  # a's session, reached through b: b -> a streams
                c.base_url = httpx.URL(url_b)
                on_b = await open_session(c)  # b's, reached through a: a -> b streams
                r = await c.post(f"{url_b}/mcp", headers=on_a, json=tool_call("echo", {"text": "x"}, 2))
                assert r.status_code == 200 and "x" in r.text, r.text
                r = await c.post(f"{url_a}/mcp", headers=on_b, json=tool_call("echo", {"text": "y"}, 3))
                assert r.status_code == 200 and "y" in r.text, r.text
                for _ in range(100):  # each relay's stream goes back to its pool once its response ended
                    if node_a.http.idle(node_b.peer_id) and node_b.http.idle(node_a.peer_id):
                        break
                    await trio.sleep(0.01)
                assert node_a.http.idle(node_b.peer_id) >= 1 and node_b.http.idle(node_a.peer_id) >= 1

                node_a.authorized.revoke(node_b.peer_id)
                for _ in range(100):  # a closes the streams it kept for b (bounded: 1 s)
                    if node_a.http.idle(node_b.peer_id) == 0:
                        break
                    await trio.sleep(0.01)
                assert node_a.http.idle(node_b.peer_id) == 0

                # b's request on the stream it pooled is refused at once: its client is told the
                # session's node cannot be reached (404: start a new session), not served.
                served_on_a = app_a.state.services.relay.statistics.relayed
                with trio.fail_after(5):
                    r = await c.post(f"{url_b}/mcp", headers=on_a, json=tool_call("echo", {"text": "z"}, 4))
                assert r.status_code == 404, r.text
                assert "z" not in r.text
                assert node_b.http.idle(node_a.peer_id) == 0
                assert app_a.state.services.relay.statistics.relayed == served_on_a
                # a no longer relays to b either: b's session is not found through a.
                r = await c.post(f"{url_a}/mcp", headers=on_b, json=tool_call("echo", {"text": "w"}, 5))
                assert r.status_code == 404, r.text

                # Everything else is as it was: each session on its own node, and the connection.
                r = await c.post(f"{url_a}/mcp", headers=on_a, json=tool_call("echo", {"text": "own-a"}, 6))
                assert r.status_code == 200 and "own-a" in r.text, r.text
                r = await c.post(f"{url_b}/mcp", headers=on_b, json=tool_call("echo", {"text": "own-b"}, 7))
                assert r.status_code == 200 and "own-b" in r.text, r.text
                assert node_a.peer_id in node_b.connected_peers()
