"""The one exception hierarchy of triomcp.

Every error the project raises on purpose is a :class:`TriomcpError`. Each one
knows how it looks on the wire: a stable string ``code`` (used in tool results
shaped ``{ok: false, error: {code, message}}``), a JSON-RPC error code and an
HTTP status hint, the way h11's errors carry ``error_status_hint``.

Foreign exceptions (libp2p, sqlite3, pydantic) are translated into these at
exactly one boundary per layer; they never leak upward.

Size: over 300 lines on purpose: the whole hierarchy is in this one module (STYLE.md item 6), one
small class per error; splitting it would split the tree drawn below.

::

    TriomcpError
    ├── ConfigError                 bad settings, refused at startup
    ├── ProtocolError               a JSON-RPC error answer (code + HTTP status)
    │   ├── ParseError              -32700  body is not JSON
    │   ├── InvalidRequest          -32600  not a JSON-RPC 2.0 message
    │   ├── MethodNotFound          -32601  unknown method (404 in the modern era)
    │   ├── InvalidParams           -32602  params fail the schema; unknown tool
    │   ├── InternalError           -32603
    │   ├── ResourceNotFound        -32002  legacy era (modern era: -32602)
    │   ├── HeaderMismatch          -32020  modern header disagrees with the body
    │   ├── MissingCapability       -32021  client did not declare a capability
    │   ├── UnsupportedVersion      -32022  protocol version not served
    │   ├── Overloaded              -32010  the node is full: calls in flight, legacy sessions (HTTP 503)
    │   │   └── TooManyRequests     -32010  a peer over its request budget or in-flight cap (libp2p)
    │   ├── OwnerUnavailable        -32011  the mesh node holding the task or state is unreachable (HTTP 503)
    │   ├── TaskFailed              (the task's own code)  a failed MCP task's error, passed through
    │   └── McpError                (the answer's code)  a JSON-RPC error a client received (triomcp.testing)
    ├── ToolError                   a tool failed: becomes an isError result
    ├── NotAuthorized               -32001  the principal may not do this
    ├── TaskQueueError
    │   ├── TaskNotFound
    │   ├── IdempotencyConflict     same key, different payload
    │   ├── LeaseLost               caller is not (or no longer) the lease holder
    │   ├── InvalidTransition       the task's state forbids the operation
    │   ├── NoHandler               no handler registered for the task type
    │   ├── NonRetryable            raised by a task handler: fail the task for good
    │   ├── NeedsInput              raised by a task handler: wait (WAITING) for answers, then run again
    │   ├── StoreUnavailable        disk full, database locked: nothing was stored (try again)
    │   └── StoreIntegrityError     a constraint refused the write (a bug): nothing was stored
    └── PeerError
        ├── DialFailed              could not reach the peer
        ├── PeerTimeout             a dial, stream open or call ran out of time
        ├── FrameError              truncated, oversized or malformed frame
        └── RemoteError             the peer answered with an error
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DialFailed",
    "FrameError",
    "HeaderMismatch",
    "HttpError",
    "IdempotencyConflict",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "InvalidTransition",
    "LeaseLost",
    "McpError",
    "MethodNotFound",
    "MissingCapability",
    "NeedsInput",
    "NoHandler",
    "NonRetryable",
    "NotAuthorized",
    "Overloaded",
    "ParseError",
    "PeerError",
    "PeerTimeout",
    "ProtocolError",
    "RemoteError",
    "ResourceNotFound",
    "SessionNotFound",
    "SessionRequired",
    "StoreIntegrityError",
    "StoreUnavailable",
    "TaskFailed",
    "TaskNotFound",
    "TaskQueueError",
    "TooManyRequests",
    "ToolError",
    "TriomcpError",
    "UnsupportedVersion",
]


class TriomcpError(Exception):
    """Base of every error triomcp raises on purpose."""

    code: str = "error"
    jsonrpc_code: int = -32603
    http_status: int = 500

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """The ``{code, message}`` shape used inside ``{ok: false, error: ...}``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


class ConfigError(TriomcpError):
    code = "config_error"


class ProtocolError(TriomcpError):
    """An error answered as a JSON-RPC error object."""

    code = "protocol_error"
    http_status = 400

    def to_jsonrpc(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.jsonrpc_code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(ProtocolError):
    code = "parse_error"
    jsonrpc_code = -32700


class InvalidRequest(ProtocolError):
    code = "invalid_request"
    jsonrpc_code = -32600


class MethodNotFound(ProtocolError):
    code = "method_not_found"
    jsonrpc_code = -32601
    http_status = 404


class InvalidParams(ProtocolError):
    code = "invalid_params"
    jsonrpc_code = -32602


class InternalError(ProtocolError):
    code = "internal_error"
    jsonrpc_code = -32603
    http_status = 500


class ResourceNotFound(ProtocolError):
    code = "resource_not_found"
    jsonrpc_code = -32002
    http_status = 200


class HeaderMismatch(ProtocolError):
    code = "header_mismatch"
    jsonrpc_code = -32020


class MissingCapability(ProtocolError):
    code = "missing_capability"
    jsonrpc_code = -32021


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"
    jsonrpc_code = -32022


class TaskFailed(ProtocolError):
    """A failed MCP task's own JSON-RPC error, passed through (legacy ``tasks/result``)."""

    code = "task_failed"

    def __init__(self, error: dict[str, Any], meta: dict[str, Any]) -> None:
        data = error.get("data")
        super().__init__(str(error.get("message", "the task failed")),
                         data={**(data or {}), "_meta": meta} if isinstance(data, dict) or data is None else data)
        code = error.get("code")
        self.jsonrpc_code = code if isinstance(code, int) else -32603


class McpError(ProtocolError):
    """A JSON-RPC error answer as a client receives it (``triomcp.testing``): the answer's own code,
    message and data; ``error`` is the error object as it came."""

    code = "mcp_error"

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")), data=error.get("data"))
        code = error.get("code")
        self.jsonrpc_code = code if isinstance(code, int) else -32603
        self.error = dict(error)

    def __str__(self) -> str:
        return f"{self.message} ({self.jsonrpc_code})"


class SessionRequired(ProtocolError):
    code = "session_required"
    jsonrpc_code = -32600


class SessionNotFound(ProtocolError):
    code = "session_not_found"
    jsonrpc_code = -32001
    http_status = 404


class Overloaded(ProtocolError):
    """The node is full (HTTP 503 with ``Retry-After``): too many MCP calls in flight, or legacy
    sessions open. -32010, the code libp2p answers a peer over its budget."""

    code = "overloaded"
    jsonrpc_code = -32010
    http_status = 503


class TooManyRequests(Overloaded):
    """A peer over its request budget or its cap on requests in flight, answered at once over libp2p
    (HTTP's per-client rate limit answers 429 through :class:`HttpError`)."""

    code = "too_many_requests"
    jsonrpc_code = -32010
    http_status = 429


class OwnerUnavailable(ProtocolError):
    """The request names a task or ``requestState`` held by another node of the mesh, and that node
    cannot be reached now (HTTP 503 with ``Retry-After``; ``data`` says which node and why). Retry:
    a node that comes back serves what it holds again."""

    code = "owner_unavailable"
    jsonrpc_code = -32011
    http_status = 503


class HttpError(ProtocolError):
    """A refusal decided by HTTP rules (Accept, Content-Type, size, method, origin)."""

    code = "http_error"
    jsonrpc_code = -32600

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers or {}


class ToolError(TriomcpError):
    """Raised by a tool to fail with a structured ``isError`` result."""

    code = "tool_error"

    def __init__(self, message: str, *, code: str | None = None, data: Any = None) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code


class NotAuthorized(TriomcpError):
    code = "not_authorized"
    jsonrpc_code = -32001
    http_status = 403


class TaskQueueError(TriomcpError):
    code = "taskqueue_error"


class TaskNotFound(TaskQueueError):
    code = "task_not_found"
    http_status = 404


class IdempotencyConflict(TaskQueueError):
    code = "idempotency_conflict"
    http_status = 409


class LeaseLost(TaskQueueError):
    code = "lease_lost"
    http_status = 409


class InvalidTransition(TaskQueueError):
    code = "invalid_transition"
    http_status = 409


class NoHandler(TaskQueueError):
    code = "no_handler"


class NonRetryable(TaskQueueError):
    """Raise from a task handler to fail the task for good (no more attempts)."""

    code = "non_retryable"


class NeedsInput(TaskQueueError):
    """Raise from a task handler that needs answers first: the task waits (``WAITING``) until
    ``TaskQueue.provide_input`` answers every request, then runs again from the start with every answer
    so far in ``task.responses`` (so handlers ask before they act; a key is answered once for good)."""

    code = "needs_input"

    def __init__(self, requests: dict[str, Any]) -> None:
        super().__init__(f"waiting for input: {', '.join(sorted(requests))}")
        self.requests = requests


class StoreUnavailable(TaskQueueError):
    code = "store_unavailable"
    http_status = 503


class StoreIntegrityError(TaskQueueError):
    """The database refused a write by a constraint: what was written is wrong, not the disk, so
    trying again cannot help (unlike :class:`StoreUnavailable`)."""

    code = "store_integrity_error"


class PeerError(TriomcpError):
    code = "peer_error"
    http_status = 502


class DialFailed(PeerError):
    code = "dial_failed"


class PeerTimeout(PeerError):
    code = "peer_timeout"
    http_status = 504


class FrameError(PeerError):
    code = "frame_error"
    jsonrpc_code = -32600


class RemoteError(PeerError):
    code = "remote_error"

    def __init__(self, message: str, *, code: str | None = None, data: Any = None) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code
