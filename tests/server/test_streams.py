"""The endpoint's long-lived SSE streams, driven in-process: a fake ASGI receive and send, no sockets."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from tests.mcp.helpers import make_engine, modern
from triomcp.mcp.outcomes import Listen
from triomcp.server.mcp_endpoint import McpEndpoint


async def test_a_listen_stream_stopped_by_shutdown_still_sends_its_completion_result() -> None:
    """Shutdown sets ``stopping`` and queues the completion result in the same step: whichever of
    the stream's two wake-ups runs first, the result is written before the stream ends."""
    engine = make_engine()
    stopping = trio.Event()
    endpoint = McpEndpoint(engine, max_body_bytes=1 << 20, stopping=stopping)
    listen = modern(engine, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, ident=8)
    assert isinstance(listen, Listen)
    bodies: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()  # a server's send may be cancelled before it writes
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint._listen, listen, receive, send)
            await trio.testing.wait_all_tasks_blocked()
            assert len(bodies) == 1  # the acknowledgement
            stopping.set()  # what the lifespan and the runner do, in this order, when the server stops
            engine.close_listeners()
    assert bodies[-1] == b"" and len(bodies) == 3
    event = bodies[1].decode()
    assert event.startswith("event: message\ndata: ")
    response = json.loads(event.removeprefix("event: message\ndata: "))
    assert response["id"] == 8 and response["result"]["resultType"] == "complete"
    assert response["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 8
