"""The servers compared by the benchmark, each run in its own process: ``python -m bench.servers KIND PORT``.

Every server offers the same trivial tool, ``add(a, b) -> {sum}``.

- ``triomcp``: this project, Hypercorn's Trio worker (P2P and the task queue off: HTTP cost only).
- ``sdk-uvicorn`` / ``sdk-hypercorn``: the official SDK's ``MCPServer`` on Uvicorn (asyncio) and on
  Hypercorn's Trio worker.
- ``floor``: a bare ASGI app on Hypercorn-trio that parses the JSON-RPC body and answers a fixed
  shape, the least any MCP server on this stack can cost.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio


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
    return json.loads(body)


async def answer_json(send: Any, ident: Any, structured: dict[str, Any]) -> None:
    """A JSON-RPC ``CallToolResult`` carrying ``structured``, with a content-length."""
    result = {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured,
              "isError": False, "resultType": "complete"}
    out = json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def serve_hypercorn_trio(app: Any, port: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    trio.run(serve, app, config)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "triomcp":
        serve_hypercorn_trio(triomcp_app(), port)
    elif kind == "sdk-hypercorn":
        serve_hypercorn_trio(sdk_app(), port)
    elif kind == "sdk-uvicorn":
        import uvicorn

        uvicorn.run(sdk_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    elif kind == "floor":
        serve_hypercorn_trio(floor_app, port)
    else:
        raise SystemExit(f"unknown server {kind}")


if __name__ == "__main__":
    main()
