"""The P2P designs compared by ``python -m bench.bridge``, each run in its own process.

    python -m bench.bridge_servers KIND ARGS...

Every design serves one MCP tool over HTTP that makes one libp2p request/response round trip
to the target node: an MCP ``tools/call`` of the target's trivial ``add`` tool over
``/triomcp/mcp/1.0.0`` (TCP + Noise + yamux), through triomcp's own client code, so the libp2p
work is identical in every design. (The libp2p ping protocol was the first choice; py-libp2p
0.8.1 resets a third concurrent ping stream to one peer, so it cannot carry 16 connections.)

- ``target DATA_DIR``: the second node: triomcp's node (as ``triomcp node`` runs it) plus ``add``.
- ``bridge-per-call PORT TARGET_MULTIADDR KEYS_DIR``: today's system as the roadmap describes it.
  The official SDK's server on Uvicorn (asyncio); the tool runs ``trio.run`` in a worker thread,
  which creates a libp2p host, dials the target, makes the call and closes the host. Every call.
- ``bridge-reused PORT TARGET_MULTIADDR KEYS_DIR``: the roadmap's "reduce bridge overhead" step.
  Same server; one long-lived thread runs a Trio loop holding one host with an open connection;
  each call hops in through ``trio.from_thread.run``.
- ``floor-chain PORT TARGET_MULTIADDR KEYS_DIR``: both floors in one process: a bare ASGI app on
  Hypercorn-trio whose request makes the call on a node held by its lifespan (no Starlette, no
  MCP engine, no middleware): what the chain costs with nothing of triomcp's in it.
- ``floor-libp2p SECONDS TARGET_MULTIADDR KEYS_DIR``: no HTTP: a Trio process making the same call
  back to back (one at a time, then 16 at a time); prints JSON.

triomcp itself needs no code here: ``triomcp serve`` with the target as a bootstrap peer, and its
built-in ``p2p_call_tool`` tool.
"""

from __future__ import annotations

import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trio

from triomcp.p2p import AuthorizedPeers, Node, open_node
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.settings import P2PSettings

P2P = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"])
POOL = 48
"""Client identities made up front and authorized on the target (one per concurrent fresh host)."""


def make_identities(keys_dir: Path, target_data: Path, count: int = POOL) -> list[Path]:
    authorized = AuthorizedPeers(target_data / "authorized_peers")
    dirs = []
    for i in range(count):
        d = keys_dir / f"client-{i}"
        d.mkdir(parents=True, exist_ok=True)
        authorized.authorize(peer_id_of(load_or_create_identity(d / "identity.key")), f"bench-{i}")
        dirs.append(d)
    return dirs


async def add(node: Node, peer: str) -> dict[str, Any]:
    result = await call_peer_tool(node, peer, "add", {"a": 1, "b": 2})
    if result.get("isError") or result.get("structuredContent", {}).get("sum") != 3:
        raise RuntimeError(f"add failed: {result}")
    return dict(result["structuredContent"])


def run_target(data_dir: Path) -> None:
    import signal

    from pydantic import BaseModel

    from triomcp.mcp import Registry, ToolContext
    from triomcp.server.app import build_services
    from triomcp.server.heap import settle_heap
    from triomcp.server.lifespan import running_services
    from triomcp.settings import Settings

    class AddIn(BaseModel):
        a: int
        b: int

    class AddOut(BaseModel):
        sum: int

    def configure(registry: Registry) -> None:
        @registry.tool(description="Add two integers.", input_model=AddIn, output_model=AddOut)
        async def add(args: AddIn, ctx: ToolContext) -> AddOut:
            return AddOut(sum=args.a + args.b)

    # No per-peer request budget on the target: the floor measures libp2p, not the limiter.
    p2p = P2P.model_copy(update={"peer_requests_per_second": 1e9, "peer_request_burst": 10**9})
    settings = Settings(data_dir=data_dir, log_level="WARNING", p2p=p2p, taskqueue={"enabled": False})  # type: ignore[arg-type]

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with running_services(build_services(settings, configure=configure)):
                settle_heap()  # as `triomcp node` does
                async for _ in signals:
                    break

    trio.run(main)


def sdk_app(call: Any) -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-bridge")

    @server.tool()
    async def call_peer(peer: str) -> dict[str, Any]:
        """One MCP call to the peer over libp2p."""
        return dict(await call(peer))

    return server.streamable_http_app(json_response=True)


def bridge_per_call(target: str, keys: list[Path]) -> Any:
    import anyio.to_thread

    free: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for k in keys:
        free.put(k)

    async def fresh_host_call(key_dir: Path) -> dict[str, Any]:
        # A deadline, as any bridge would have: a stuck call must not hold a worker thread for ever.
        with trio.fail_after(10):
            async with open_node(P2P, key_dir, announce=False) as node:
                peer = await node.connect(target)
                return await add(node, peer)

    def in_thread() -> dict[str, Any]:
        key_dir = free.get()
        try:
            return trio.run(fresh_host_call, key_dir)  # a new Trio loop and a new host, for this call
        finally:
            free.put(key_dir)

    async def call(peer: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(in_thread)

    return sdk_app(call)


def bridge_reused(target: str, keys: list[Path]) -> Any:
    import anyio.to_thread

    state: dict[str, Any] = {}
    up = threading.Event()

    async def hold_host() -> None:
        async with open_node(P2P, keys[-1], announce=False) as node:  # an identity no other design uses
            for attempt in range(10):
                try:
                    state["peer"] = await node.connect(target)
                    break
                except Exception:
                    if attempt == 9:
                        raise
                    await trio.sleep(0.5)
            state["node"], state["token"] = node, trio.lowlevel.current_trio_token()
            up.set()
            await trio.sleep_forever()

    threading.Thread(target=trio.run, args=(hold_host,), daemon=True).start()
    if not up.wait(30):
        raise SystemExit("the Trio thread could not connect to the target")

    async def call(peer: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(
            lambda: trio.from_thread.run(add, state["node"], peer, trio_token=state["token"]))

    return sdk_app(call)


def floor_chain(target: str, key_dir: Path) -> Any:
    """Both floors in one Trio process: a bare ASGI app (no framework, no MCP engine) whose POST
    makes the libp2p call on a node held by its lifespan. What HTTP-then-libp2p costs with nothing
    of triomcp's in between."""
    from bench.servers import answer_json, read_json

    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async with trio.open_nursery() as nursery:
                async def hold(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    async with open_node(P2P, key_dir, announce=False) as node:
                        state["node"], state["peer"] = node, await node.connect(target)
                        task_status.started()
                        await trio.sleep_forever()

                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await nursery.start(hold)
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        nursery.cancel_scope.cancel()
                        await send({"type": "lifespan.shutdown.complete"})
                        return
        request = await read_json(receive)
        await answer_json(send, request["id"], await add(state["node"], state["peer"]))

    return app


async def floor_libp2p(target: str, key_dir: Path, seconds: float) -> dict[str, Any]:
    """The call on an open connection with no HTTP in front: one at a time, then 16 at a time."""
    async with open_node(P2P, key_dir, announce=False) as node:
        peer = await node.connect(target)
        for _ in range(100):  # warm-up, excluded
            await add(node, peer)
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await add(node, peer)
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        done = 0

        async def loop(stop_at: float) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await add(node, peer)
                done += 1

        stop_at = time.perf_counter() + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(loop, stop_at)
        return {"p50_ms": statistics.median(samples), "p99_ms": samples[max(0, int(len(samples) * 0.99) - 1)],
                "calls": len(samples), "rps_c16": done / seconds}


def main() -> None:
    kind = sys.argv[1]
    if kind == "target":
        run_target(Path(sys.argv[2]))
        return
    target, keys_dir = sys.argv[3], Path(sys.argv[4])
    keys = sorted((p for p in keys_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    if kind == "floor-libp2p":
        print(json.dumps(trio.run(floor_libp2p, target, keys[-1], float(sys.argv[2]))))
        return
    if kind == "floor-chain":
        from bench.servers import serve_hypercorn_trio

        serve_hypercorn_trio(floor_chain(target, keys[-3]), int(sys.argv[2]))
        return
    import uvicorn

    # keys[-1]: the libp2p floor; keys[-2]: the reused host; keys[-3]: the chained floor; the rest: the per-call pool.
    app = bridge_per_call(target, keys[:-3]) if kind == "bridge-per-call" else bridge_reused(target, keys[:-1])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
