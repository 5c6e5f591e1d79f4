"""JSON-RPC 2.0 message shapes: decoding, classifying and building messages.

Messages are plain ``dict`` values on the wire side; spec types from
``mcp_types`` validate params and results in the engine.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic_core import from_json, to_json

from triomcp.errors import InvalidRequest, ParseError, ProtocolError

__all__ = [
    "Kind",
    "Message",
    "classify",
    "decode",
    "dumps",
    "error_response",
    "notification",
    "request",
    "result_response",
]

RequestId = str | int


class Kind(StrEnum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"


class Message(NamedTuple):
    """One classified JSON-RPC message: its kind, the decoded object, and what every handler reads
    (read once, at classification: they were properties, read some 20 times per request)."""

    kind: Kind
    raw: dict[str, Any]
    id: RequestId | None
    """A string or integer id (a boolean is not one), else None."""
    method: str
    """``""`` for a response."""
    params: dict[str, Any]
    """``params`` when it is an object, else ``{}``."""


def _message(kind: Kind, obj: dict[str, Any]) -> Message:
    ident = obj.get("id")
    params = obj.get("params")
    return Message(kind, obj, ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None,
                   str(obj.get("method", "")), params if isinstance(params, dict) else {})


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Text that cannot be UTF-8 (a lone surrogate a client sent, say, in its
    request id) is written as ``\\uXXXX`` escapes: valid JSON, and the same string back.

    pydantic-core's encoder (Rust) writes it, about 5x faster than the standard library's on an
    MCP answer; whatever it refuses (a lone surrogate, a type it does not know) goes through the
    standard library as before. Its output differs in how some floats are spelt (``1.5e-7`` for
    ``1.5e-07``: the same number) and in what it takes beside JSON's own types (dates, bytes,
    sets and models are written as pydantic writes them where the standard library raised
    ``TypeError``); NaN and the infinities are written as the standard library writes them."""
    try:
        return to_json(obj, inf_nan_mode="constants")
    except ValueError:  # PydanticSerializationError
        pass
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes) -> Any:
    """Decode a UTF-8 JSON body or raise ParseError.

    ``NaN``, ``Infinity`` and ``-Infinity`` are refused: Python's decoder accepts them, JSON does not.
    pydantic-core's parser (Rust, about 4x faster) reads it; anything it refuses is read again by
    the standard library's, whose answer (the value, or the parse error) is the one given, so what
    is accepted and what it decodes to are the standard library's (lone surrogates, a UTF-8 BOM
    and nesting deeper than 200 take that path)."""
    try:
        return from_json(body, allow_inf_nan=False)
    except ValueError:
        pass
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ParseError(f"Parse error: body is not valid UTF-8 JSON ({exc.__class__.__name__})") from None


def classify(obj: Any) -> Message:
    """Classify one decoded JSON value as a JSON-RPC message or raise InvalidRequest."""
    if not isinstance(obj, dict):
        raise InvalidRequest("Invalid Request: a JSON-RPC message must be a JSON object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidRequest('Invalid Request: "jsonrpc" must be "2.0"')
    has_id = "id" in obj
    ident = obj.get("id")
    if has_id and (isinstance(ident, bool) or not isinstance(ident, (str, int))):
        raise InvalidRequest("Invalid Request: id must be a string or an integer")
    if "method" in obj:
        if not isinstance(obj["method"], str) or not obj["method"]:
            raise InvalidRequest("Invalid Request: method must be a non-empty string")
        if "params" in obj and not isinstance(obj["params"], dict):
            raise InvalidRequest("Invalid Request: params must be an object")
        return _message(Kind.REQUEST if has_id else Kind.NOTIFICATION, obj)
    if has_id and "result" in obj and "error" not in obj:
        return _message(Kind.RESULT, obj)
    if "error" in obj and "result" not in obj and isinstance(obj["error"], dict):
        return _message(Kind.ERROR, obj)
    raise InvalidRequest("Invalid Request: not a request, notification or response")


def request(ident: RequestId, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result_response(ident: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "result": result}


def error_response(ident: RequestId | None, err: ProtocolError) -> dict[str, Any]:
    """An error response; ``id`` is ``null`` when the request id could not be read."""
    return {"jsonrpc": "2.0", "id": ident, "error": err.to_jsonrpc()}
