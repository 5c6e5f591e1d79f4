"""A tool call this node makes on another node of the mesh for its own HTTP client, as that client.

Some calls need another node to serve them, and the HTTP relay (:mod:`triomcp.server.relay`) does
not see them: a task tool inside a legacy session (the session's node runs it) for a task a third
node holds, and ``taskqueue_list`` asking every node for the caller's tasks. :func:`call_tool` sends
that node a 2026-07-28 ``tools/call`` over HTTP over libp2p carrying the client's own credentials
(:data:`CLIENT_HEADERS`), so the node runs it through its own HTTP app and authenticates the client
itself: the call has the principal there that the client has here (``token:alice``, not
``peer:<this node>|token:alice`` as over MCP over libp2p), and forwarding neither widens nor
narrows what the client may see.

The caller gives the call its time (``limit_s``). A read of a libp2p stream is never cancelled
(:mod:`triomcp.p2p.http`): the exchange runs shielded, and a watchdog abandons it by closing its
stream when time runs out or the call is cancelled (the node takes that as its client's
disconnect, and cancels its own call), and resets it if the node stays silent after that.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from triomcp.errors import PeerError
from triomcp.logs import REQUEST_ID
from triomcp.mcp.results import modern_meta
from triomcp.mcp.versions import LATEST_MODERN_VERSION
from triomcp.p2p import Node
from triomcp.p2p.http import Headers, reset
from triomcp.server.relay import Carrier, Relay, sse_messages

__all__ = ["CLIENT_HEADERS", "Progress", "call_tool"]

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
"""Told of each ``notifications/progress`` of the call: progress, total, message."""

CLIENT_HEADERS = ("host", "authorization", "origin", "user-agent")
"""What the call takes from the client's own request: what the node's HTTP app checks (Host,
Origin, the bearer token), so the client is the same principal there."""


def _headers(client: Mapping[str, str], tool: str) -> Headers:
    headers = [(name.encode("latin-1"), client[name].encode("latin-1")) for name in CLIENT_HEADERS if name in client]
    headers += [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream"),
                (b"mcp-protocol-version", LATEST_MODERN_VERSION.encode()), (b"mcp-method", b"tools/call"),
                (b"mcp-name", tool.encode())]
    request_id = REQUEST_ID.get()
    if request_id:  # the node logs the call under this request's id
        headers.append((b"x-request-id", request_id.encode("latin-1")))
    return headers


async def call_tool(relay: Relay, peer: str, client: Mapping[str, str], tool: str, arguments: dict[str, Any], *,
                    limit_s: float, on_progress: Progress | None = None) -> dict[str, Any]:
    """The JSON-RPC response of ``tool`` called on ``peer`` for the HTTP client whose request had the
    headers ``client`` (lower-case names). Progress ``peer`` reports goes to ``on_progress``.
    Abandoned after ``limit_s`` seconds, or when cancelled. :class:`~triomcp.errors.OwnerUnavailable`
    when ``peer`` cannot be reached, failed a moment ago, or does not answer in time."""
    node = relay.node()
    if node is None:
        raise relay.unavailable(peer, "this node's libp2p node is not running")
    if relay.is_down(node, peer):
        raise relay.unavailable(peer, "it failed a moment ago")
    extra: dict[str, Any] = {"progressToken": 1} if on_progress is not None else {}
    meta = modern_meta(**extra)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments, "_meta": meta}}).encode()
    carrier, done = Carrier(), trio.Event()
    answer: dict[str, Any] | None = None
    failure = ""
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            try:
                await trio.sleep(limit_s)
            finally:  # out of time, or cancelled
                if not done.is_set():
                    with trio.CancelScope(shield=True):
                        await carrier.abandon(node.settings.stream_timeout)
                        with trio.move_on_after(node.settings.stream_timeout):
                            await done.wait()
                        if not done.is_set() and carrier.streams:  # the node stays silent
                            await reset(carrier.streams[-1])

        nursery.start_soon(watchdog)
        with trio.CancelScope(shield=True):  # ended by the watchdog, never cancelled mid-read
            try:
                answer = await _exchange(relay, node, peer, _headers(client, tool), body, carrier, on_progress)
            except PeerError as exc:
                failure = str(exc)
            finally:
                done.set()
        nursery.cancel_scope.cancel()
    relay.statistics.calls += 1
    if carrier.left.is_set():
        await trio.lowlevel.checkpoint()  # cancelled: Cancelled is raised here
    if answer is not None:
        return answer
    if carrier.left.is_set():
        raise relay.unavailable(peer, f"no answer within {limit_s:g} s")
    relay.failed(peer)
    raise relay.unavailable(peer, failure)


async def _exchange(relay: Relay, node: Node, peer: str, headers: Headers, body: bytes, carrier: Carrier,
                    on_progress: Progress | None) -> dict[str, Any]:
    """One ``tools/call``: its JSON-RPC response (the JSON body, or the response event of an SSE stream)."""
    async with node.http.request(peer, "POST", "/mcp", headers, body, on_stream=carrier.carried_by,
                                 abandoned=carrier.left.is_set) as response:
        relay.answered(peer)
        kind = next((value for name, value in response.headers if name == b"content-type"), b"")
        if kind.startswith(b"text/event-stream"):
            async with contextlib.aclosing(sse_messages(response)) as messages:
                async for message in messages:
                    if not isinstance(message, dict):
                        continue
                    if "result" in message or "error" in message:
                        return message
                    params = message.get("params")
                    if (on_progress is not None and message.get("method") == "notifications/progress"
                            and isinstance(params, dict) and isinstance(params.get("progress"), int | float)):
                        await on_progress(params["progress"], params.get("total"), params.get("message"))
            raise PeerError(f"{peer} ended its event stream without a response")
        data, limit = b"", node.settings.max_frame_bytes
        async with contextlib.aclosing(response.chunks()) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > limit:
                    raise PeerError(f"{peer} answered more than {limit} bytes")
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not ("result" in message or "error" in message):
        raise PeerError(f"{peer} answered HTTP {response.status}: {data[:200]!r}")
    return message
