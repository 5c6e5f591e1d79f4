"""A TTL cache per node, optionally replicated to connected authorized peers."""

from __future__ import annotations

import logging
from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import AnyJson, Registry
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.services import services_of
from triomcp.server.tools.forwarding import acting_for
from triomcp.server.tools.toolset import BuiltinTool, add_tools

__all__ = ["TOOLS", "cache_delete", "cache_get", "cache_set", "register"]

log = logging.getLogger("triomcp.cache")
REPLICATE_TIMEOUT = 2.0
KEY = Field(min_length=1, max_length=512)


class GetArgs(BaseModel):
    key: str = KEY


class SetArgs(BaseModel):
    key: str = KEY
    value: AnyJson
    ttl_s: float = Field(default=300.0, gt=0, le=30 * 86400)
    replicate: bool = Field(default=False, description="also store on every connected authorized peer")


class DeleteArgs(BaseModel):
    key: str = KEY
    replicate: bool = False


class Got(BaseModel):
    found: bool
    value: AnyJson = None
    ttl_left_s: float | None = None


class Stored(BaseModel):
    key: str
    replicated_to: list[str] = Field(default_factory=list)
    replication_failed: list[str] = Field(default_factory=list)


class Deleted(BaseModel):
    deleted: bool
    replicated_to: list[str] = Field(default_factory=list)


async def _replicate(ctx: ToolContext, tool: str, arguments: dict[str, Any]) -> tuple[list[str], list[str]]:
    node = services_of(ctx).node
    if node is None:
        return [], []
    targets = [p for p in node.connected_peers() if node.authorized.is_authorized(p)]
    done: list[str] = []
    failed: list[str] = []

    async def one(peer: str) -> None:
        try:
            with trio.fail_after(REPLICATE_TIMEOUT):
                result = await call_peer_tool(node, peer, tool, arguments, on_behalf_of=acting_for(ctx))
            (done if not result.get("isError") else failed).append(peer)
        except Exception as exc:  # one slow or unauthorized peer must not fail the local write
            log.info("cache replication to %s failed: %s", peer, exc)
            failed.append(peer)

    async with trio.open_nursery() as nursery:
        for peer in targets:
            nursery.start_soon(one, peer)
    return sorted(done), sorted(failed)


async def cache_get(args: GetArgs, ctx: ToolContext) -> Got:
    found, value, left = services_of(ctx).cache.get(args.key)
    return Got(found=found, value=value, ttl_left_s=None if left is None else round(left, 3))


async def cache_set(args: SetArgs, ctx: ToolContext) -> Stored:
    services_of(ctx).cache.set(args.key, args.value, args.ttl_s)
    done: list[str] = []
    failed: list[str] = []
    if args.replicate:
        done, failed = await _replicate(ctx, "cache_set", {"key": args.key, "value": args.value,
                                                           "ttl_s": args.ttl_s})
    return Stored(key=args.key, replicated_to=done, replication_failed=failed)


async def cache_delete(args: DeleteArgs, ctx: ToolContext) -> Deleted:
    deleted = services_of(ctx).cache.delete(args.key)
    done: list[str] = []
    if args.replicate:
        done, _ = await _replicate(ctx, "cache_delete", {"key": args.key})
    return Deleted(deleted=deleted, replicated_to=done)


TOOLS = [
    BuiltinTool(cache_get, "Read a cached value.", group="cache", read_only=True),
    BuiltinTool(cache_set, "Store a JSON value for ttl_s seconds (optionally on every connected peer).",
                group="cache", idempotent=True),
    BuiltinTool(cache_delete, "Delete a cached value (optionally on every connected peer).", group="cache",
                destructive=True, idempotent=True),
]


def register(registry: Registry) -> None:
    add_tools(registry, TOOLS)
