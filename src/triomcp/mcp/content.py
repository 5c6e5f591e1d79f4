"""Builders for MCP content blocks: every kind a tool, resource or prompt can return.

Each returns the wire dict (camelCase keys), ready to place in ``content``.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["audio", "embedded_resource", "image", "resource_link", "text"]


def _b64(data: bytes | str) -> str:
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


def text(value: str, *, annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": value}
    if annotations:
        block["annotations"] = annotations
    return block


def image(data: bytes | str, mime_type: str) -> dict[str, Any]:
    """An image; ``data`` is raw bytes or already base64-encoded text."""
    return {"type": "image", "data": _b64(data), "mimeType": mime_type}


def audio(data: bytes | str, mime_type: str) -> dict[str, Any]:
    """Audio; ``data`` is raw bytes or already base64-encoded text."""
    return {"type": "audio", "data": _b64(data), "mimeType": mime_type}


def embedded_resource(
    uri: str, *, text: str | None = None, blob: bytes | None = None, mime_type: str | None = None
) -> dict[str, Any]:
    """A resource embedded by value: give exactly one of ``text`` or ``blob``."""
    if (text is None) == (blob is None):
        raise ValueError("give exactly one of text or blob")
    resource: dict[str, Any] = {"uri": uri}
    if mime_type:
        resource["mimeType"] = mime_type
    if text is not None:
        resource["text"] = text
    else:
        assert blob is not None
        resource["blob"] = _b64(blob)
    return {"type": "resource", "resource": resource}


def resource_link(
    uri: str, name: str, *, description: str | None = None, mime_type: str | None = None
) -> dict[str, Any]:
    """A link to a resource the client may read later."""
    link: dict[str, Any] = {"type": "resource_link", "uri": uri, "name": name}
    if description:
        link["description"] = description
    if mime_type:
        link["mimeType"] = mime_type
    return link
