"""What the conformance fixture modules share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import ToolResult

__all__ = ["Fixture", "NoArguments", "text_result"]

Fixture = Callable[[Any, ToolContext], Awaitable[ToolResult]]
"""A fixture tool: ``async (arguments model, context) -> ToolResult``."""


class NoArguments(BaseModel):
    """A tool that takes no arguments."""


def text_result(value: str) -> ToolResult:
    """An unstructured result of one text block."""
    return ToolResult(content=[content.text(value)])
