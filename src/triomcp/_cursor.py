"""The one cursor codec: an opaque, URL-safe token for "continue after position N" in a listing.

``encode("o", 100)`` is the MCP lists' offset cursor, ``encode("s", seq)`` the task queue's; a
cursor of one kind is refused by the other (``ValueError``), as is anything not made here.
``encode_positions("m", {...})`` holds several named positions at once, each a cursor of its own
(a listing over several nodes: each node's queue cursor, by owner tag).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

__all__ = ["decode", "decode_positions", "encode", "encode_positions"]

MAX_POSITIONS = 256


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


def encode_positions(kind: str, positions: Mapping[str, str]) -> str:
    text = json.dumps(dict(positions), sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(f"{kind}:{text}".encode()).decode("ascii")


def decode_positions(kind: str, cursor: str) -> dict[str, str]:
    """The positions in ``cursor`` (at most :data:`MAX_POSITIONS`, names and positions strings);
    ``ValueError`` when it is not a cursor of this kind."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        prefix, _, rest = text.partition(":")
        positions = json.loads(rest) if prefix == kind else None
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if (not isinstance(positions, dict) or len(positions) > MAX_POSITIONS
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in positions.items())):
        raise ValueError(f"invalid cursor {cursor!r}")
    return positions
