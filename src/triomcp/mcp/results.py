"""Tool results and modern decorations, encoded and decoded in one place.

- :func:`tool_success` / :func:`tool_failure`: what a tool's return value or error becomes on
  the wire (``structuredContent`` shaped ``{ok: true, ...}`` or ``{ok: false, error}``, mirrored as
  JSON text; or, for an unstructured tool, exactly its content blocks).
- :func:`unwrap_tool_result`: the inverse, for a caller of another node's tool: the structured
  data, or the tool's error raised as :class:`~triomcp.errors.ToolError` with the same code.
- :func:`modern_meta` builds a modern request's ``_meta``; :func:`strip_modern` removes what the
  engine adds to every modern result (``resultType``, ``_meta``, cache directives), for results
  that travel on inside another result.
"""

from __future__ import annotations

from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from pydantic import BaseModel

from triomcp.errors import ToolError
from triomcp.mcp.jsonrpc import dumps
from triomcp.mcp.versions import LATEST_MODERN_VERSION

__all__ = ["MODERN_DECORATIONS", "modern_meta", "strip_modern", "tool_failure", "tool_success",
           "unwrap_tool_result"]

MODERN_DECORATIONS = ("resultType", "_meta", "ttlMs", "cacheScope")
"""What the engine adds to a modern result beside the method's own fields."""


def _text(value: Any) -> str:
    return dumps(value).decode()


def tool_success(output: Any, extra: list[dict[str, Any]] | None = None, *, structured: bool = True) -> dict[str, Any]:
    """A tool's return value (a model, a dict, None, or any JSON value) as a ``CallToolResult``."""
    blocks = list(extra or [])
    if not structured:
        if output is not None:
            body = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
            blocks.insert(0, {"type": "text", "text": body if isinstance(body, str) else _text(body)})
        return {"content": blocks, "isError": False}
    if isinstance(output, BaseModel):
        data = output.model_dump(mode="json", by_alias=True)
    elif isinstance(output, dict):
        data = dict(output)
    elif output is None:
        data = {}
    else:
        data = {"value": output}
    content = {"ok": True, **data}
    return {"content": [{"type": "text", "text": _text(content)}, *blocks], "structuredContent": content,
            "isError": False}


def tool_failure(code: str, message: str, data: Any = None, *, structured: bool = True) -> dict[str, Any]:
    """A tool's failure as an ``isError`` ``CallToolResult``."""
    if not structured:
        return {"content": [{"type": "text", "text": message}], "isError": True}
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    content = {"ok": False, "error": error}
    return {"content": [{"type": "text", "text": _text(content)}], "structuredContent": content, "isError": True}


def unwrap_tool_result(result: dict[str, Any], *, where: str = "") -> dict[str, Any]:
    """The structured data of a successful result (without ``ok``; ``{"content": [...]}`` for a tool
    that answers unstructured); raises ToolError with the tool's own code and message when it
    failed. ``where`` prefixes the message (``"on peer X: "``)."""
    structured = result.get("structuredContent")
    if result.get("isError"):
        error = (structured or {}).get("error") if isinstance(structured, dict) else None
        error = error if isinstance(error, dict) else {}
        text = error.get("message") or _first_text(result) or "failed"
        raise ToolError(f"{where}{text}", code=str(error.get("code") or "remote_error"))
    if not isinstance(structured, dict):  # an unstructured tool: its content blocks are its answer
        return {"content": list(result.get("content") or [])}
    if structured.get("ok") is False:
        failed = structured.get("error")
        failed = failed if isinstance(failed, dict) else {}
        raise ToolError(f"{where}{failed.get('message', 'failed')}", code=str(failed.get("code") or "remote_error"))
    return {k: v for k, v in structured.items() if k != "ok"}


def _first_text(result: dict[str, Any]) -> str:
    for block in result.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            return str(block.get("text", ""))
    return ""


def strip_modern(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without the engine's modern decorations (a copy)."""
    return {k: v for k, v in result.items() if k not in MODERN_DECORATIONS}


def modern_meta(capabilities: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A modern request's ``_meta``: the protocol version, the client capabilities, and ``extra``
    (``_meta`` keys such as ``progressToken``, or the project's own keys)."""
    return {PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION, CLIENT_CAPABILITIES_META_KEY: capabilities or {},
            **extra}
