"""Real libp2p nodes on 127.0.0.1 (TCP + Noise), closed before the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from triomcp.p2p import Node, open_node
from triomcp.settings import P2PSettings

CANCELLED: list[Any] = []
CANCELLED_EVENTS: dict[Any, trio.Event] = {}


async def fake_handler(message: dict[str, Any], *, peer_id: str, notify: Any) -> dict[str, Any] | None:
    """A tiny MCP-ish handler: echo, progress, block (until cancelled), whoami."""
    if "id" not in message:
        return None
    method = message["method"]
    params = message.get("params") or {}
    token = (params.get("_meta") or {}).get("progressToken")
    if method == "echo":
        result: dict[str, Any] = {"echo": params.get("value")}
    elif method == "progress":
        for i in range(3):
            await notify({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": token, "progress": i + 1}})
        result = {"done": True}
    elif method == "block":
        try:
            await trio.sleep_forever()
        finally:
            CANCELLED.append(params.get("tag"))
            CANCELLED_EVENTS.setdefault(params.get("tag"), trio.Event()).set()
    elif method == "whoami":
        result = {"peer_id": peer_id}
    else:
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "unknown"}}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def p2p_settings(**kw: Any) -> P2PSettings:
    """Loopback nodes; reachability checks and hole punching off unless a test turns them on (on
    loopback every node reaches every other: both would only add background dials to other tests)."""
    kw = {"reachability": {"check": False}, **kw}
    kw["relay"] = {"hole_punch": False, **kw.get("relay", {})}
    return P2PSettings(**{"listen": ["/ip4/127.0.0.1/tcp/0"], "dial_timeout": 5.0, "stream_timeout": 5.0, **kw})


@contextlib.asynccontextmanager
async def node_in(path: Path, **kw: Any) -> AsyncIterator[Node]:
    async with open_node(p2p_settings(**kw), path, frame_handler=fake_handler) as node:
        yield node


def authorize(node: Node, *others: Node) -> None:
    for other in others:
        node.authorized.authorize(other.peer_id, "test")
