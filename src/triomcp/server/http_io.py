"""Bytes in and out of ASGI for the MCP endpoint: the body (bounded), JSON replies, SSE events."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from triomcp.errors import HttpError
from triomcp.mcp import jsonrpc
from triomcp.mcp.outcomes import Reply
from triomcp.mcp.session import SseEvent

__all__ = ["ERROR_STATUS", "RETRY_MS", "SSE_HEADERS", "read_body", "request_headers", "send_reply", "sse"]

ERROR_STATUS = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400, -32022: 400, -32601: 404}
"""HTTP status for a modern-era JSON-RPC error answer (others: 200)."""

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def request_headers(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name; a repeated header's values joined with ``", "``."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or HttpError(413) as soon as it grows past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"Payload Too Large: the body limit is {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


RETRY_MS = 1000
"""The ``retry:`` a legacy priming event carries: how long a client waits before it resumes a stream
the server closed (SSE polling, 2025-11-25) or that broke."""


def sse(event: SseEvent | None, data: dict[str, Any] | None = None) -> bytes:
    if event is None:
        return b"event: message\ndata: " + jsonrpc.dumps(data) + b"\n\n"
    if event.data is None:  # a priming event: an id to resume from, and when to come back
        return f"id: {event.id}\nretry: {RETRY_MS}\ndata: \n\n".encode()
    return f"id: {event.id}\nevent: message\ndata: ".encode() + jsonrpc.dumps(event.data) + b"\n\n"


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    body = b""
    if reply.body is not None:
        body = jsonrpc.dumps(reply.body)
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
