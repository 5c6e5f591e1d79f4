"""JSON-RPC 2.0 message shapes: decoding, classifying and building messages.

Messages are plain ``dict`` values on the wire side; spec types from
``mcp_types`` validate params and results in the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Message:
    """One classified JSON-RPC message."""

    kind: Kind
    raw: dict[str, Any]

    @property
    def id(self) -> RequestId | None:
        value = self.raw.get("id")
        return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None

    @property
    def method(self) -> str:
        return str(self.raw.get("method", ""))

    @property
    def params(self) -> dict[str, Any]:
        params = self.raw.get("params")
        return params if isinstance(params, dict) else {}


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Text that cannot be UTF-8 (a lone surrogate a client sent, say, in its
    request id) is written as ``\\uXXXX`` escapes: valid JSON, and the same string back."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes) -> Any:
    """Decode a UTF-8 JSON body or raise ParseError.

    ``NaN``, ``Infinity`` and ``-Infinity`` are refused: Python's decoder accepts them, JSON does not."""
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
        return Message(Kind.REQUEST if has_id else Kind.NOTIFICATION, obj)
    if has_id and "result" in obj and "error" not in obj:
        return Message(Kind.RESULT, obj)
    if "error" in obj and "result" not in obj and isinstance(obj["error"], dict):
        return Message(Kind.ERROR, obj)
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
