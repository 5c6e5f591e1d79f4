"""What the conformance fixture modules share."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import ToolResult

__all__ = ["Fixture", "NoArguments", "compact_json", "text_result"]

Fixture = Callable[[Any, ToolContext], Awaitable[ToolResult]]
"""A fixture tool: ``async (arguments model, context) -> ToolResult``."""


class NoArguments(BaseModel):
    """A tool that takes no arguments."""


def text_result(value: str) -> ToolResult:
    """An unstructured result of one text block."""
    return ToolResult(content=[content.text(value)])


def compact_json(value: Any) -> str:
    """``value`` as compact JSON (no spaces, non-ASCII kept), as the scenarios expect it in text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
