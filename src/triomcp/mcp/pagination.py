"""Paginated lists: an opaque offset cursor in, ``nextCursor`` out; a bad cursor is -32602."""

from __future__ import annotations

from typing import Any

from triomcp import _cursor
from triomcp.errors import InvalidParams

__all__ = ["page"]


def page(items: list[dict[str, Any]], cursor: Any, *, size: int, key: str) -> dict[str, Any]:
    """One page of ``items`` under ``key``, starting where ``cursor`` says (None: the start)."""
    offset = 0
    if cursor is not None:
        try:
            offset = _cursor.decode("o", str(cursor))
        except ValueError:
            raise InvalidParams(f"Invalid cursor: {cursor!r}") from None
        if offset > len(items):
            raise InvalidParams(f"Invalid cursor: {cursor!r}")
    result: dict[str, Any] = {key: items[offset : offset + size]}
    if offset + size < len(items):
        result["nextCursor"] = _cursor.encode("o", offset + size)
    return result
