"""HTTP-level checks of a request to the MCP endpoint: media types, versions, routing headers."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from mcp_types import PROTOCOL_VERSION_META_KEY

from triomcp.errors import HeaderMismatch, HttpError, UnsupportedVersion
from triomcp.mcp.headers import decode_header_value
from triomcp.mcp.jsonrpc import Message
from triomcp.mcp.versions import MODERN_VERSIONS, SUPPORTED_VERSIONS

__all__ = ["NAME_HEADER_PARAM", "accepts", "check_routing_headers", "check_version_header", "media_types",
           "meta_version", "refuse_modern", "unsupported_version"]

NAME_HEADER_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
                     "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}
"""Methods whose ``Mcp-Name`` header mirrors a param."""


@lru_cache(maxsize=256)
def media_types(value: str) -> tuple[str, ...]:
    """The media types a ``Content-Type`` or ``Accept`` value names, parameters dropped.

    Remembered for the last 256 values: clients send the same few on every request, and parsing
    them was about 3 % of a trivial call."""
    return tuple(part.split(";", 1)[0].strip().lower() for part in value.split(",") if part.strip())


@lru_cache(maxsize=256)
def accepts(accept: str, wanted: str) -> bool:
    """An empty ``Accept`` takes anything."""
    if not accept:
        return True
    major = wanted.split("/", 1)[0]
    return any(t in (wanted, f"{major}/*", "*/*") for t in media_types(accept))


def meta_version(msg: Message) -> str | None:
    """The protocol version a modern request names in its ``_meta``, if any."""
    meta = msg.params.get("_meta")
    if isinstance(meta, dict):
        value = meta.get(PROTOCOL_VERSION_META_KEY)
        return value if isinstance(value, str) else None
    return None


def unsupported_version(version: str) -> UnsupportedVersion:
    return UnsupportedVersion(f"Unsupported protocol version: {version}",
                              data={"supported": list(SUPPORTED_VERSIONS), "requested": version})


def check_version_header(header_version: str | None, version: str) -> None:
    if header_version != version:
        raise HeaderMismatch(
            f"MCP-Protocol-Version header ({header_version!r}) does not match params._meta ({version!r})")


def check_routing_headers(msg: Message, headers: Mapping[str, str]) -> None:
    """``Mcp-Method`` must name the method; ``Mcp-Name`` the tool, prompt, URI or task."""
    method_header = headers.get("mcp-method")
    if method_header is None or decode_header_value(method_header) != msg.method:
        raise HeaderMismatch(f"Mcp-Method header ({method_header!r}) does not match method {msg.method!r}")
    param = NAME_HEADER_PARAM.get(msg.method)
    if param is not None:
        name_header = headers.get("mcp-name")
        expected = msg.params.get(param)
        if name_header is None or decode_header_value(name_header) != expected:
            raise HeaderMismatch(f"Mcp-Name header ({name_header!r}) does not match params.{param}")


def refuse_modern(method: str, headers: Mapping[str, str]) -> None:
    """GET and DELETE do not exist in the modern era: 405, whatever ``Mcp-Session-Id`` says."""
    version = headers.get("mcp-protocol-version")
    if version in MODERN_VERSIONS:
        raise HttpError(405, f"Method Not Allowed: {method} is not part of protocol {version} (POST only)",
                        headers={"Allow": "POST"})
