"""The one cursor codec: an opaque, URL-safe token for "continue after position N" in a listing.

``encode("o", 100)`` is the MCP lists' offset cursor, ``encode("s", seq)`` the task queue's; a
cursor of one kind is refused by the other (``ValueError``), as is anything not made here.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode", "encode"]


def encode(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode("ascii")


def decode(kind: str, cursor: str) -> int:
    """The position in ``cursor``; ``ValueError`` when it is not a cursor of this kind."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix != kind or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
