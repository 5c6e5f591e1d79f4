"""The servers compared by the benchmark, each run in its own process: ``python -m bench.servers KIND PORT``.

Every server offers the same trivial tool, ``add(a, b) -> {sum}``, and the tools of the shapes
table (bench/shapes.py): ``progress_add(a, b)``, which sends one ``notifications/progress`` before
its result (so a client that sent a ``progressToken`` and accepts SSE gets ``text/event-stream``),
``big_text()``, one text content of :data:`BIG_BYTES` characters, and ``big_structured()``,
structured data whose compact JSON is about as long (:class:`Items`, with its text mirror). The
large payloads are built once, at a server's first call of their tool (so the processes of table
1, which never call them, do not hold them), the same for every server: the tools return them,
so what is measured is carrying them, not making them.

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
- ``sdk-hypercorn-sse``: the SDK's server on Hypercorn-trio with ``json_response=False`` (its
  default): only there does it stream. With ``json_response=True`` (the other kinds, as table 1
  measures it) it answers every call with JSON and drops a tool's notifications; with ``False`` a
  modern call is answered JSON unless the handler emits a notification first, which commits SSE.
- ``floor-shapes``: the floor of the shapes table, on the same server code as ``floor``: for
  ``progress_add`` an SSE answer (the progress event, then the result event, each its own body
  chunk as a streaming server sends them), for ``big_text`` and ``big_structured`` a pre-encoded
  body of the same shape and size as triomcp's with only the JSON-RPC id spliced in.

Every server gets the same Hypercorn settings (:func:`hypercorn_config`).
"""

from __future__ import annotations

import sys
import tempfile
from functools import cache, partial
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel
from pydantic_core import from_json, to_json

from triomcp.server.heap import settle_heap

BIG_BYTES = 256 * 1024
"""A large result: ``big_text``'s text has this many characters (plain ASCII, nothing JSON escapes,
so as many bytes on the wire); ``big_structured``'s data encodes to about this many bytes."""


class Item(BaseModel):
    id: int
    name: str
    value: float
    tags: list[str]


class Items(BaseModel):
    """``big_structured``'s output: a list of small records, the common shape of a large tool result."""

    items: list[Item]


@cache
def big_text() -> str:
    """:data:`BIG_BYTES` characters of words and spaces."""
    words = "the quick brown fox jumps over the lazy dog "
    return (words * (BIG_BYTES // len(words) + 1))[:BIG_BYTES]


def big_items() -> dict[str, Any]:
    """Records until their compact JSON reaches :data:`BIG_BYTES` (as plain data: each server makes
    its own objects from it)."""
    items: list[dict[str, Any]] = []
    size = len('{"items":[]}')
    while size < BIG_BYTES:
        item = {"id": len(items), "name": f"item-{len(items):05d}", "value": len(items) / 4, "tags": ["alpha", "beta"]}
        size += len(to_json(item)) + 1
        items.append(item)
    return {"items": items}


@cache
def big_items_model() -> Items:
    """:func:`big_items` as the tools' output model, made once."""
    return Items.model_validate(big_items())


def _hinted(fn: Any, **hints: Any) -> Any:
    """``fn`` with real objects as its annotations: this module's annotations are strings (postponed),
    which the SDK resolves in the module's globals, where a name imported inside a function is not."""
    fn.__annotations__ = hints
    return fn


def triomcp_app() -> Any:
    from triomcp.mcp import Registry, ToolContext
    from triomcp.server.app import create_app
    from triomcp.settings import Settings

    class AddIn(BaseModel):
        a: int
        b: int

    class AddOut(BaseModel):
        sum: int

    class NoArgs(BaseModel):
        pass

    def configure(registry: Registry) -> None:
        @registry.tool(description="Add two integers.", read_only=True, input_model=AddIn, output_model=AddOut)
        async def add(args: AddIn, ctx: ToolContext) -> AddOut:
            return AddOut(sum=args.a + args.b)

        @registry.tool(description="Add two integers, reporting progress once first.", read_only=True,
                       input_model=AddIn, output_model=AddOut)
        async def progress_add(args: AddIn, ctx: ToolContext) -> AddOut:
            await ctx.report_progress(1, 1)
            return AddOut(sum=args.a + args.b)

        @registry.tool("big_text", description="A large text.", read_only=True, structured=False,
                       input_model=NoArgs)
        async def big_text_tool(args: NoArgs, ctx: ToolContext) -> str:
            return big_text()

        @registry.tool(description="Many records.", read_only=True, input_model=NoArgs, output_model=Items)
        async def big_structured(args: NoArgs, ctx: ToolContext) -> Items:
            return big_items_model()

    data = Path(tempfile.mkdtemp(prefix="triomcp-bench-"))
    settings = Settings(data_dir=data, p2p={"enabled": False}, taskqueue={"enabled": False},  # type: ignore[arg-type]
                        log_level="WARNING")
    return create_app(settings, configure=configure)


def sdk_app(*, json_response: bool = True) -> Any:
    """The SDK's server with the same tools, written as its documentation writes them (arguments as
    parameters, ``ctx: Context`` for progress, the return annotation as the output schema)."""
    from mcp.server.mcpserver import Context, MCPServer

    server = MCPServer("bench")

    @server.tool()
    async def add(a: int, b: int) -> dict[str, int]:
        """Add two integers."""
        return {"sum": a + b}

    async def progress_add(a: int, b: int, ctx: Context) -> dict[str, int]:
        """Add two integers, reporting progress once first."""
        await ctx.report_progress(1, 1)
        return {"sum": a + b}

    server.tool()(_hinted(progress_add, a=int, b=int, ctx=Context, **{"return": dict[str, int]}))

    @server.tool(name="big_text", structured_output=False)
    async def big_text_tool() -> str:
        """A large text."""
        return big_text()

    @server.tool()
    async def big_structured() -> Items:
        """Many records."""
        return big_items_model()

    return server.streamable_http_app(json_response=json_response)


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    request = await read_json(receive)
    args = request["params"]["arguments"]
    await answer_json(send, request["id"], {"sum": args["a"] + args["b"]})


async def lifespan(receive: Any, send: Any) -> None:
    """A bare app's ASGI lifespan: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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
    out = to_json({"jsonrpc": "2.0", "id": ident, "result": _result(structured)})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def _result(structured: dict[str, Any]) -> dict[str, Any]:
    """A ``CallToolResult`` carrying ``structured`` and its text mirror."""
    return {"content": [{"type": "text", "text": to_json(structured).decode()}], "structuredContent": structured,
            "isError": False, "resultType": "complete"}


def shapes_floor_app() -> Any:
    """The floor of the shapes table: the least an MCP server on this stack can cost to stream one
    progress event before a result, or to carry a large one (``floor-shapes``).

    ``progress_add``: SSE, the progress event and then the result event, each its own body chunk
    (a server that streams sends the progress before it has the result). ``big_text`` and
    ``big_structured``: the result of triomcp's shape encoded once here, at startup; each answer
    is that body with the request's id spliced in, and a content-length."""
    data = big_items()
    results = {"big_text": {"content": [{"type": "text", "text": big_text()}], "isError": False,
                            "resultType": "complete"},
               "big_structured": _result(data)}
    tails = {name: b',"result":' + to_json(result) + b"}" for name, result in results.items()}
    head = b'{"jsonrpc":"2.0","id":'
    sse_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        request = await read_json(receive)
        params = request["params"]
        if params["name"] == "progress_add":
            progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": params["_meta"]["progressToken"], "progress": 1, "total": 1}}
            args = params["arguments"]
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": _result({"sum": args["a"] + args["b"]})}
            await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
            await send({"type": "http.response.body", "body": b"event: message\ndata: " + to_json(progress) + b"\n\n",
                        "more_body": True})
            await send({"type": "http.response.body", "body": b"event: message\ndata: " + to_json(answer) + b"\n\n"})
            return
        out = head + to_json(request["id"]) + tails[params["name"]]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


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
    elif kind == "sdk-hypercorn-sse":
        serve_hypercorn_trio(sdk_app(json_response=False), port)
    elif kind == "sdk-uvicorn":
        import uvicorn

        uvicorn.run(sdk_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    elif kind == "floor":
        serve_served(floor_app, port)
    elif kind == "floor-shapes":
        serve_served(shapes_floor_app(), port)
    elif kind == "floor-hypercorn":
        serve_hypercorn_trio(floor_app, port, freeze=True)
    elif kind == "floor-unfrozen":
        serve_hypercorn_trio(floor_app, port)
    else:
        raise SystemExit(f"unknown server {kind}")


if __name__ == "__main__":
    main()
