"""Modern-era (2026-07-28) HTTP header rules: routing headers and ``Mcp-Param-*``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from triomcp.errors import HeaderMismatch

__all__ = ["check_param_headers", "decode_header_value", "encode_header_value", "render_scalar"]

_B64_PREFIX = "=?base64?"
_B64_SUFFIX = "?="


def encode_header_value(value: str) -> str:
    """Plain when printable ASCII without edge whitespace, else ``=?base64?...?=``."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return _B64_PREFIX + base64.b64encode(value.encode()).decode("ascii") + _B64_SUFFIX


def decode_header_value(raw: str) -> str | None:
    """The header's value, decoding the base64 sentinel; None when the sentinel is corrupt."""
    if raw.startswith(_B64_PREFIX) and raw.endswith(_B64_SUFFIX):
        inner = raw[len(_B64_PREFIX) : -len(_B64_SUFFIX)]
        try:
            return base64.b64decode(inner, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return raw


def render_scalar(value: Any) -> str | None:
    """How an argument appears in a header: strings as-is, numbers and booleans as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return None


def check_param_headers(
    mirrored: Mapping[str, str], arguments: Mapping[str, Any], headers: Mapping[str, str]
) -> None:
    """Each ``x-mcp-header`` argument and its ``Mcp-Param-<Name>`` header must agree (or both be absent)."""
    for argument, name in mirrored.items():
        header = f"mcp-param-{name.lower()}"
        raw = headers.get(header)
        value = arguments.get(argument)
        if value is None:
            if raw is not None:
                raise HeaderMismatch(f"Mcp-Param-{name} header is present but argument {argument!r} is absent")
            continue
        rendered = render_scalar(value)
        if raw is None:
            if rendered is not None:
                raise HeaderMismatch(f"Mcp-Param-{name} header is missing but argument {argument!r} is present")
            continue
        if rendered is None or decode_header_value(raw) != rendered:
            raise HeaderMismatch(f"Mcp-Param-{name} header does not match argument {argument!r}")
