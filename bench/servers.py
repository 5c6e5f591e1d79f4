"""The servers compared by the benchmark, each run in its own process: ``python -m bench.servers KIND PORT``.

Every server offers the same trivial tool, ``add(a, b) -> {sum}``.

- ``triomcp``: this project served as ``triomcp serve`` serves it (:func:`triomcp.server.serving.serve`:
  Hypercorn's Trio worker behind the request gate, ``http.max_requests_in_progress``, and the
  listeners that take every waiting connection; the startup heap frozen once ready), P2P and the
  task queue off: HTTP cost only. ``triomcp-ungated``: the same without the gate, and
  ``triomcp-plain``: the same app on plain ``hypercorn.trio.serve`` with its heap not frozen (how
  this benchmark served it before), to measure what the gate and the frozen heap change.
- ``sdk-uvicorn`` / ``sdk-hypercorn``: the official SDK's ``MCPServer`` on Uvicorn (asyncio) and on
  Hypercorn's Trio worker.
- ``floor``: a bare ASGI app that parses the JSON-RPC body and answers a fixed shape, the least any
  MCP server on this stack can cost, served by the same server code as triomcp
  (:func:`triomcp.server.serving.serve`, Hypercorn's Trio worker with triomcp's listeners and
  connection handler) but without the request gate, which is triomcp's own admission control and
  so part of what it costs. It decodes and encodes JSON with triomcp's codec (pydantic-core's, see
  :func:`triomcp.mcp.jsonrpc.dumps`) and its heap is frozen once it serves, as triomcp's is, so
  neither is part of the distance measured. ``floor-hypercorn``: the same app on plain
  ``hypercorn.trio.serve`` (``floor-unfrozen``: and its heap not frozen). Measured on this machine,
  plain ``hypercorn.trio.serve`` costs about 1.4x the CPU per request of ``serving.serve`` at 16
  connections (the same at 1): a floor on it is no floor for a server that runs on the other.
  The SDK's servers run as their users run them, on plain Hypercorn and on Uvicorn.

Every server gets the same Hypercorn settings (:func:`hypercorn_config`).
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio
from pydantic_core import from_json, to_json

from triomcp.server.heap import settle_heap


def triomcp_app() -> Any:
    from pydantic import BaseModel

    from triomcp.mcp import Registry, ToolContext
    from triomcp.server.app import create_app
    from triomcp.settings import Settings

    class AddIn(BaseModel):
        a: int
        b: int

    class AddOut(BaseModel):
        sum: int

    def configure(registry: Registry) -> None:
        @registry.tool(description="Add two integers.", read_only=True, input_model=AddIn, output_model=AddOut)
        async def add(args: AddIn, ctx: ToolContext) -> AddOut:
            return AddOut(sum=args.a + args.b)

    data = Path(tempfile.mkdtemp(prefix="triomcp-bench-"))
    settings = Settings(data_dir=data, p2p={"enabled": False}, taskqueue={"enabled": False},  # type: ignore[arg-type]
                        log_level="WARNING")
    return create_app(settings, configure=configure)


def sdk_app() -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench")

    @server.tool()
    async def add(a: int, b: int) -> dict[str, int]:
        """Add two integers."""
        return {"sum": a + b}

    return server.streamable_http_app(json_response=True)


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    request = await read_json(receive)
    args = request["params"]["arguments"]
    await answer_json(send, request["id"], {"sum": args["a"] + args["b"]})


async def read_json(receive: Any) -> Any:
    """The request body, parsed (a bare ASGI app: no framework)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return from_json(body)


async def answer_json(send: Any, ident: Any, structured: dict[str, Any]) -> None:
    """A JSON-RPC ``CallToolResult`` carrying ``structured``, with a content-length."""
    result = {"content": [{"type": "text", "text": to_json(structured).decode()}], "structuredContent": structured,
              "isError": False, "resultType": "complete"}
    out = to_json({"jsonrpc": "2.0", "id": ident, "result": result})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def hypercorn_config(port: int) -> Any:
    """Hypercorn's settings for every server: as ``triomcp serve`` sets them where they change what a
    request costs (no access log, no ``server`` header)."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.include_server_header = False
    return config


def serve_hypercorn_trio(app: Any, port: int, *, freeze: bool = False) -> None:
    """Plain ``hypercorn.trio.serve``; with ``freeze``, the startup heap frozen once it serves, as
    ``triomcp serve`` does (:func:`triomcp.server.heap.settle_heap`)."""
    from hypercorn.trio import serve

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, hypercorn_config(port)))
            if freeze:
                settle_heap()

    trio.run(main)


def serve_triomcp(port: int, *, gated: bool = True) -> None:
    """As ``triomcp serve`` serves (server/runner.py): the request gate in front of Hypercorn's
    protocol (unless not ``gated``), the draining listeners, and the startup heap frozen once the
    server is up."""
    from triomcp.server.serving import serve

    app = triomcp_app()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            gate = app.state.services.request_gate if gated else None
            await nursery.start(partial(serve, app, hypercorn_config(port), gate=gate))
            settle_heap()

    trio.run(main)


def serve_served(app: Any, port: int) -> None:
    """``app`` on :func:`triomcp.server.serving.serve` (triomcp's listeners and connection handler,
    no gate), its heap frozen once it serves."""
    from triomcp.server.serving import serve

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, hypercorn_config(port)))
            settle_heap()

    trio.run(main)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "triomcp":
        serve_triomcp(port)
    elif kind == "triomcp-ungated":
        serve_triomcp(port, gated=False)
    elif kind == "triomcp-plain":
        serve_hypercorn_trio(triomcp_app(), port)
    elif kind == "sdk-hypercorn":
        serve_hypercorn_trio(sdk_app(), port)
    elif kind == "sdk-uvicorn":
        import uvicorn

        uvicorn.run(sdk_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    elif kind == "floor":
        serve_served(floor_app, port)
    elif kind == "floor-hypercorn":
        serve_hypercorn_trio(floor_app, port, freeze=True)
    elif kind == "floor-unfrozen":
        serve_hypercorn_trio(floor_app, port)
    else:
        raise SystemExit(f"unknown server {kind}")


if __name__ == "__main__":
    main()
