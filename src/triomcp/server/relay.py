"""Many nodes, one MCP server: a request is served by the node holding what it names.

Behind a round-robin load balancer, a legacy session, its GET stream, a task or an input-required
round's ``requestState`` lives on one node and the next request lands on another. Every id a node
mints carries its owner tag (:mod:`triomcp._owner`); the engine reads a request for one
(:mod:`triomcp.mcp.routing`), and :class:`Relay` hands the request as it came (method, path,
headers, body) to the owner over HTTP/1.1 over libp2p (:mod:`triomcp.p2p.http`). The owner runs
it through its own HTTP app, middleware and authentication included, so the request has the same
principal there as if it had landed there: forwarding neither widens nor narrows what a client
may see. The response streams back as it is written (SSE included, nothing buffered), and a
client that disconnects resets the libp2p stream, which the owner takes as that client's
disconnect.

Failure is an answer, never a hang: a legacy session whose node cannot be reached is answered
404 (the spec's signal to start a new session), any other request 503 with ``Retry-After`` and
JSON-RPC error -32011 naming the node. A node that failed is not dialed again for
:data:`DOWN_SECONDS` (unless it connects again first), so a dead node costs its requests one fast
answer, not a dial timeout each.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from starlette.types import Receive, Scope, Send

from triomcp._owner import owner_tag, tag_of
from triomcp.errors import OwnerUnavailable, PeerError, SessionNotFound
from triomcp.logs import REQUEST_ID
from triomcp.mcp.engine import Engine
from triomcp.mcp.outcomes import Listen, Reply
from triomcp.mcp.routing import OwnerRoute
from triomcp.p2p import Node
from triomcp.p2p._errors import close_quietly
from triomcp.p2p.http import FORWARDED_FOR, HOP_BY_HOP, Headers
from triomcp.p2p.rpc import Stream
from triomcp.server.http_io import send_reply

__all__ = ["DOWN_SECONDS", "Relay", "RelayStatistics"]


def _relayed_headers(scope: Scope) -> Headers:
    """A request's headers as the owner gets them: the client's address in ``triomcp-forwarded-for``
    and this node's request id (the owner logs the request under it; the answer carries that one
    id), whatever the client sent for either."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (FORWARDED_FOR, b"x-request-id")]
    request_id = REQUEST_ID.get()
    if request_id:
        headers.append((b"x-request-id", request_id.encode("latin-1")))
    client = scope.get("client")
    if client:
        headers.append((FORWARDED_FOR, f"{client[0]}:{client[1]}".encode("latin-1")))
    return headers


def _sse_data(event: bytes) -> Any:
    """The JSON of an SSE event's ``data`` lines (None when it has none or they are not JSON)."""
    data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None

log = logging.getLogger("triomcp.relay")

DOWN_SECONDS = 2.0
"""After a failed relay to a node, its requests are answered at once for this long (no new dial),
unless it is connected again meanwhile."""
RETRY_AFTER_SECONDS = 1


class RelayStatistics:
    def __init__(self) -> None:
        self.relayed = 0
        self.failed = 0


class Relay:
    """Serves a request that names another node's session, task or state on that node."""

    def __init__(self, engine: Engine, node: Callable[[], Node | None]) -> None:
        self.engine = engine
        self._node = node
        self._by_tag: dict[str, str] = {}
        """owner tag -> peer id, for the peers this node has looked at."""
        self._down: dict[str, float] = {}
        """peer id -> until when it is taken as unreachable."""
        self.statistics = RelayStatistics()

    def owner(self, route: OwnerRoute) -> str | None:
        """The peer id of the node ``route`` names, among the peers this node authorizes; None
        when no such node is known (the request is then served here, and finds nothing)."""
        node = self._node()
        if node is None:
            return None
        if route.peer is not None:
            return route.peer if route.peer != node.peer_id and node.authorized.is_listed(route.peer) else None
        peer = self._by_tag.get(route.tag)
        if peer is None:  # a tag not seen yet: look at the peers now known (they are few)
            for candidate in set(node.connected_peers()) | {e.peer_id for e in node.authorized.entries()}:
                self._by_tag.setdefault(owner_tag(candidate), candidate)
            peer = self._by_tag.get(route.tag)
        return peer if peer is not None and peer != node.peer_id and node.authorized.is_listed(peer) else None

    async def serve(self, route: OwnerRoute, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Relay the request to the node ``route`` names; False when no such node is known."""
        node = self._node()
        peer = self.owner(route)
        if node is None or peer is None:
            return False
        if trio.current_time() < self._down.get(peer, 0.0) and not node.is_connected(peer):
            await send_reply(send, self._unreachable(route, peer, "it failed a moment ago"))
            return True
        headers = _relayed_headers(scope)
        started = False
        target = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        carrier: list[Stream] = []
        known, left = trio.Event(), trio.Event()
        answered = False

        def carried_by(stream: Stream) -> None:
            carrier.append(stream)
            known.set()

        async with trio.open_nursery() as nursery:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if answered:  # Hypercorn says so once the response is complete: the stream is pooled
                    return
                left.set()
                with trio.move_on_after(node.settings.stream_timeout):  # while the stream is being opened
                    await known.wait()
                if carrier:  # close, never cancel, a stream being read: the owner sees the client leave
                    await close_quietly(carrier[-1])

            nursery.start_soon(until_disconnect)
            try:
                async with node.http.request(peer, scope["method"], target.decode("latin-1"), headers, body,
                                             on_stream=carried_by, abandoned=left.is_set) as response:
                    self._down.pop(peer, None)
                    self.statistics.relayed += 1
                    out = [(k, v) for k, v in response.headers
                           if (k not in HOP_BY_HOP or k == b"content-length") and k != b"x-request-id"]
                    await send({"type": "http.response.start", "status": response.status, "headers": out})
                    started = True
                    async for chunk in response.chunks():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    answered = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except PeerError as exc:
                if not left.is_set():
                    self.statistics.failed += 1
                    if started:  # the owner went away mid-response: the client sees the response end
                        log.info("relay to %s ended early: %s", peer[:16], exc)
                    else:
                        self._down[peer] = trio.current_time() + DOWN_SECONDS
                        log.info("relay to %s failed: %s", peer[:16], exc)
                        await send_reply(send, self._unreachable(route, peer, str(exc)))
            nursery.cancel_scope.cancel()
        return True

    @contextlib.asynccontextmanager
    async def watching_tasks(self, listen: Listen, scope: Scope, body: bytes,
                             deliver: Callable[[dict[str, Any]], None]) -> AsyncIterator[None]:
        """While a ``subscriptions/listen`` stream is open here: for the tasks in its filter that other
        nodes hold, a listen stream on each of those nodes (relayed, with the client's own headers),
        whose ``notifications/tasks`` are delivered into this one."""
        node = self._node()
        by_peer: dict[str, list[str]] = {}
        for task_id in listen.notifications.get("taskIds", ()):
            tag = tag_of(task_id)
            peer = self.owner(OwnerRoute(tag)) if tag is not None else None  # None for this node's own
            if peer is not None:
                by_peer.setdefault(peer, []).append(task_id)
        if node is None or not by_peer:
            yield
            return
        try:
            meta = json.loads(body)["params"]["_meta"]
        except (ValueError, KeyError, TypeError):
            yield
            return
        carriers: list[Stream] = []
        watching = len(by_peer)
        ended = trio.Event()

        async def watch(peer: str, task_ids: list[str]) -> None:
            nonlocal watching
            request = {"jsonrpc": "2.0", "id": f"{listen.request_id}", "method": "subscriptions/listen",
                       "params": {"notifications": {"taskIds": task_ids}, "_meta": meta}}
            try:
                await self._watch(node, peer, scope, json.dumps(request).encode(), deliver, carriers.append)
            finally:
                watching -= 1
                if not watching:
                    ended.set()

        async with trio.open_nursery() as nursery:
            for peer, task_ids in by_peer.items():
                nursery.start_soon(watch, peer, task_ids)
            try:
                yield
            finally:
                for stream in carriers:  # closed, never cancelled mid-read: the owners end their streams
                    await close_quietly(stream)
                with trio.move_on_after(node.settings.stream_timeout):
                    await ended.wait()
                nursery.cancel_scope.cancel()

    async def _watch(self, node: Node, peer: str, scope: Scope, body: bytes,
                     deliver: Callable[[dict[str, Any]], None], carried_by: Callable[[Stream], None]) -> None:
        headers = _relayed_headers(scope)
        buffer = b""
        try:
            async with node.http.request(peer, "POST", "/mcp", headers, body, on_stream=carried_by) as response:
                if response.status != 200:
                    log.info("watching tasks on %s: answered %d", peer[:16], response.status)
                    return
                async for chunk in response.chunks():
                    buffer += chunk
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        message = _sse_data(event)
                        if isinstance(message, dict) and message.get("method") == "notifications/tasks":
                            deliver(message)
        except PeerError as exc:
            log.info("watching tasks on %s ended: %s", peer[:16], exc)

    def _unreachable(self, route: OwnerRoute, peer: str, why: str) -> Reply:
        if route.session:
            return self.engine.error_reply(SessionNotFound(
                "Session not found: the node holding it cannot be reached; start a new session"))
        unavailable = OwnerUnavailable(
            f"the node holding this ({peer}) cannot be reached now: {why}; retry in {RETRY_AFTER_SECONDS} s",
            data={"reason": "owner_unreachable", "owner": peer, "retryable": True})
        reply = self.engine.error_reply(unavailable, route.request_id)
        return Reply(reply.status, reply.body, {**reply.headers, "retry-after": str(RETRY_AFTER_SECONDS)})
