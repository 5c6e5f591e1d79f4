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

Calls a tool makes on another node for its own client (:mod:`triomcp.server.relay_call`) share the
owner lookup, the down marks, :class:`Carrier` and :func:`sse_messages`.

Size: just over 300 lines: the relay of one request and of the task watches, kept together."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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
from triomcp.p2p.http import FORWARDED_FOR, HOP_BY_HOP, HTTP_PROTOCOL, Headers, Response
from triomcp.p2p.rpc import Stream
from triomcp.server.http_io import send_reply

__all__ = ["DOWN_SECONDS", "Carrier", "Relay", "RelayStatistics", "sse_messages"]


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


async def sse_messages(response: Response) -> AsyncGenerator[Any, None]:
    """The JSON messages of an SSE response's events, as they arrive."""
    buffer = b""
    async with contextlib.aclosing(response.chunks()) as chunks:  # closed, not left to the collector,
        async for chunk in chunks:                                 # when the caller stops early
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                message = _sse_data(event)
                if message is not None:
                    yield message


class Carrier:
    """The libp2p stream a relayed request goes over, and how the request is abandoned: by closing
    the stream (the owner takes its end as the client's disconnect), never by cancelling a read."""

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.known = trio.Event()
        self.left = trio.Event()  # the request was given up: it is not sent again on a fresh stream

    def carried_by(self, stream: Stream) -> None:
        self.streams.append(stream)
        self.known.set()

    async def abandon(self, wait_s: float) -> None:
        self.left.set()
        with trio.move_on_after(wait_s):  # while the stream is being opened
            await self.known.wait()
        if self.streams:
            await close_quietly(self.streams[-1])


log = logging.getLogger("triomcp.relay")

DOWN_SECONDS = 2.0
"""After a failed relay to a node, its requests are answered at once for this long (no new dial),
unless it is connected again meanwhile."""
RETRY_AFTER_SECONDS = 1


class RelayStatistics:
    def __init__(self) -> None:
        self.relayed = 0  # requests relayed as they came
        self.failed = 0
        self.calls = 0  # tool calls made on another node for a client of this one (relay_call)


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

    def node(self) -> Node | None:
        """This node's libp2p node, once it runs."""
        return self._node()

    def is_down(self, node: Node, peer: str) -> bool:
        """Did a request to ``peer`` fail a moment ago (and it has not connected again since)?"""
        return trio.current_time() < self._down.get(peer, 0.0) and not node.is_connected(peer)

    def answered(self, peer: str) -> None:
        self._down.pop(peer, None)  # it is up

    def failed(self, peer: str) -> None:
        """A request to ``peer`` failed before it was answered: take it as down for a moment."""
        self.statistics.failed += 1
        self._down[peer] = trio.current_time() + DOWN_SECONDS

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

    def mesh_peers(self) -> list[str]:
        """The other nodes of the mesh, as far as this one knows: the peers listed in its
        ``authorized_peers`` that it is connected to or has addresses for, except those whose
        identify said they serve no HTTP over libp2p (a worker-only ``triomcp node``)."""
        node = self._node()
        if node is None:
            return []
        listed = {e.peer_id for e in node.authorized.entries()} - {node.peer_id}
        reached = {p["peer_id"] for p in node.known_peers() if p["connected"] or p["addrs"]}
        return sorted(p for p in listed & reached if node.supports(p, HTTP_PROTOCOL) is not False)

    async def serve(self, route: OwnerRoute, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Relay the request to the node ``route`` names; False when no such node is known."""
        node = self._node()
        peer = self.owner(route)
        if node is None or peer is None:
            return False
        if self.is_down(node, peer):
            await send_reply(send, self._unreachable(route, peer, "it failed a moment ago"))
            return True
        headers = _relayed_headers(scope)
        started = False
        target = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        carrier = Carrier()
        answered = False

        async with trio.open_nursery() as nursery:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not answered:  # Hypercorn says so once the response is complete: the stream is pooled
                    await carrier.abandon(node.settings.stream_timeout)

            nursery.start_soon(until_disconnect)
            try:
                async with node.http.request(peer, scope["method"], target.decode("latin-1"), headers, body,
                                             on_stream=carrier.carried_by, abandoned=carrier.left.is_set
                                             ) as response:
                    self.answered(peer)
                    self.statistics.relayed += 1
                    out = [(k, v) for k, v in response.headers
                           if (k not in HOP_BY_HOP or k == b"content-length") and k != b"x-request-id"]
                    await send({"type": "http.response.start", "status": response.status, "headers": out})
                    started = True
                    ended = False
                    async with contextlib.aclosing(response.chunks()) as chunks:
                        async for chunk in chunks:
                            ended = response.finished  # the end came with this chunk: it is the last
                            answered = answered or ended
                            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                    answered = True
                    if not ended:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
            except PeerError as exc:
                if not carrier.left.is_set():
                    if started:  # the owner went away mid-response: the client sees the response end
                        self.statistics.failed += 1
                        log.info("relay to %s ended early: %s", peer[:16], exc)
                    else:
                        self.failed(peer)
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
        try:
            async with node.http.request(peer, "POST", "/mcp", headers, body, on_stream=carried_by) as response:
                if response.status != 200:
                    log.info("watching tasks on %s: answered %d", peer[:16], response.status)
                    return
                async with contextlib.aclosing(sse_messages(response)) as messages:
                    async for message in messages:
                        if isinstance(message, dict) and message.get("method") == "notifications/tasks":
                            deliver(message)
        except PeerError as exc:
            log.info("watching tasks on %s ended: %s", peer[:16], exc)

    def _unreachable(self, route: OwnerRoute, peer: str, why: str) -> Reply:
        if route.session:
            return self.engine.error_reply(SessionNotFound(
                "Session not found: the node holding it cannot be reached; start a new session"))
        reply = self.engine.error_reply(self.unavailable(peer, why), route.request_id)
        return Reply(reply.status, reply.body, {**reply.headers, "retry-after": str(RETRY_AFTER_SECONDS)})

    @staticmethod
    def unavailable(peer: str, why: str) -> OwnerUnavailable:
        """The error for a request whose owner ``peer`` cannot be reached (-32011, retryable)."""
        return OwnerUnavailable(
            f"the node holding this ({peer}) cannot be reached now: {why}; retry in {RETRY_AFTER_SECONDS} s",
            data={"reason": "owner_unreachable", "owner": peer, "retryable": True})
