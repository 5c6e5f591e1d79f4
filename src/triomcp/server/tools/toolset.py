"""A built-in tool's definition: a module-level function and how it is served.

Each tool module lists its definitions in ``TOOLS`` and its ``register`` adds them with
:func:`add_tools`; the functions stay plain, importable and callable from a test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry

__all__ = ["BuiltinTool", "add_tools"]


@dataclass(frozen=True)
class BuiltinTool:
    """``fn`` (``async def name(args: InModel, ctx) -> OutModel``) served under its own name."""

    fn: Callable[[Any, ToolContext], Awaitable[Any]]
    description: str
    group: str
    """Authorization group (``auth.scopes`` maps scopes to groups)."""
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None
    task_support: Literal["forbidden", "optional", "required"] = "forbidden"
    owner_argument: str | None = None
    """The argument whose id names the node that serves the call (``ToolDef.owner_argument``)."""
    peer_argument: str | None = None
    """The argument that names the node serving the call by peer id (``ToolDef.peer_argument``)."""


def add_tools(registry: Registry, tools: Iterable[BuiltinTool]) -> None:
    for tool in tools:
        registry.tool(
            description=tool.description, group=tool.group, read_only=tool.read_only,
            destructive=tool.destructive, idempotent=tool.idempotent, open_world=tool.open_world,
            task_support=tool.task_support, owner_argument=tool.owner_argument,
            peer_argument=tool.peer_argument,
        )(tool.fn)
