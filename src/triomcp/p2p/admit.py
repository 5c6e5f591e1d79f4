"""What to do with each message a peer sends on an MCP stream: sans-I/O, one function.

:func:`admit` takes one decoded frame (or the :class:`~triomcp.p2p.framing.FrameIssue` that
replaced it) and what the stream knows at that moment (is the peer authorized, which request ids
are in flight, the cap on them, the peer's request budget), and returns what
:func:`~triomcp.p2p.rpc.serve_stream` must do. As with h11's ``_state``, everything that decides
lives here, the stream only moves bytes, and the rules are tested synchronously, as a table
(``tests/p2p/test_admit.py``).

The rules, in order; the first that matches decides:

=====================================  ==========================================================
the message                            the decision
=====================================  ==========================================================
a skipped frame (bad UTF-8, JSON ...)  :class:`Answer` the issue's code, id null (a frame error)
no ``method`` (a response)             :class:`Answer` -32600: peers send requests, notifications
the peer is not authorized             :class:`Answer` -32001 to a request; :class:`Drop` a
                                       notification
``notifications/cancelled``, no id    :class:`Cancel` its ``requestId`` if that is in flight,
                                       else :class:`Drop` (nothing more is sent for it); with an
                                       ``id`` it is a request (JSON-RPC owes it an answer),
                                       decided by the rows below and run: it cancels nothing
any other notification                 :class:`Deliver` it to the handler, in order
an id neither a string nor an integer  :class:`Answer` -32600, id null
an id already in flight                :class:`Answer` -32600
``max_inflight`` requests in flight    :class:`Answer` -32010
the peer's budget spent                :class:`Answer` -32010 (only now is a token taken)
otherwise                              :class:`Run` it in its own task
=====================================  ==========================================================

This decides per message on an authenticated stream; ``admission.py`` decides per connection,
before authentication. The error codes come from :mod:`triomcp.errors`; ``p2p/`` does not import
the MCP engine (a layer rule), so the few error responses are built here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from triomcp.errors import InvalidRequest, NotAuthorized, TooManyRequests
from triomcp.p2p.framing import FrameIssue

__all__ = ["Answer", "Budget", "Cancel", "Decision", "Deliver", "Drop", "Run", "admit", "error_message"]

CANCELLED = "notifications/cancelled"

RequestId = str | int


class Budget(Protocol):
    """A peer's request budget (:class:`triomcp._ratelimit.TokenBucket`)."""

    rate: float

    def take(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Run:
    """Start the request in its own task, under a cancel scope kept under ``ident``."""

    ident: RequestId
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand the notification to the handler before reading on (it gets no answer)."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the request in flight under ``ident``; nothing more is sent for it."""

    ident: RequestId


@dataclass(frozen=True, slots=True)
class Answer:
    """Send ``message`` (an error response) and run nothing; ``frame_error``: count a bad frame."""

    message: dict[str, Any]
    frame_error: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Do nothing."""

    reason: str


Decision = Run | Deliver | Cancel | Answer | Drop


def error_message(ident: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response; an ``ident`` that is not a string or an integer becomes null."""
    return {"jsonrpc": "2.0", "id": ident if isinstance(ident, (str, int)) else None,
            "error": {"code": code, "message": message}}


def admit(
    item: dict[str, Any] | FrameIssue,
    *,
    peer_id: str,
    authorized: bool,
    inflight: Collection[Any],
    max_inflight: int,
    budget: Budget | None = None,
) -> Decision:
    """What to do with ``item`` (the table in the module docstring). Takes a token from
    ``budget`` only for a request that passed every other rule."""
    if isinstance(item, FrameIssue):
        return Answer(error_message(None, item.code, item.message), frame_error=True)
    ident = item.get("id")
    if "method" not in item:
        return Answer(error_message(ident, InvalidRequest.jsonrpc_code,
                                    "peers may only send requests and notifications"))
    if not authorized:
        if "id" not in item:
            return Drop("a notification from a peer that is not authorized")
        return Answer(error_message(ident, NotAuthorized.jsonrpc_code,
                                    f"not authorized: peer {peer_id} is not in authorized_peers"))
    if item.get("method") == CANCELLED and "id" not in item:
        return _cancel(item, inflight)
    if "id" not in item:
        return Deliver(item)
    return _request(item, ident, inflight=inflight, max_inflight=max_inflight, budget=budget)


def _cancel(item: dict[str, Any], inflight: Collection[Any]) -> Cancel | Drop:
    params = item.get("params")
    target = params.get("requestId") if isinstance(params, dict) else None
    if isinstance(target, (str, int)) and target in inflight:
        return Cancel(target)
    return Drop("a cancel for no request in flight")


def _request(
    item: dict[str, Any], ident: Any, *, inflight: Collection[Any], max_inflight: int, budget: Budget | None
) -> Answer | Run:
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        return Answer(error_message(None, InvalidRequest.jsonrpc_code, "id must be a string or an integer"))
    if ident in inflight:
        return Answer(error_message(ident, InvalidRequest.jsonrpc_code,
                                    f"request id {ident!r} is already in flight"))
    if len(inflight) >= max_inflight:
        return Answer(error_message(ident, TooManyRequests.jsonrpc_code,
                                    f"too many requests in flight (limit {max_inflight})"))
    if budget is not None and not budget.take():
        return Answer(error_message(ident, TooManyRequests.jsonrpc_code,
                                    f"too many requests (limit {budget.rate:g}/s per peer)"))
    return Run(ident, item)
