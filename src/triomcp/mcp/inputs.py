"""Input rounds in the modern era (multi round-trip requests): what a retry brings, what a round asks.

A handler that needs client input raises :class:`~triomcp.mcp.context.InputRequired`; the answer
is an ``InputRequiredResult`` whose ``requestState`` is signed (HMAC) and bound to the method, its
target, a digest of the arguments and the principal, and carries the answers gathered so far, so
a handler that asks in several rounds sees every answer although each retry brings the newest.
"""

from __future__ import annotations

from typing import Any

from triomcp.errors import InvalidParams, ToolError
from triomcp.mcp.context import InputRequired
from triomcp.mcp.core import Core, Request
from triomcp.mcp.request_state import arguments_digest
from triomcp.mcp.versions import Era

__all__ = ["INPUT_METHODS", "input_required", "inputs"]

INPUT_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
"""Methods whose handlers may ask the client for input."""


def binding(req: Request) -> dict[str, Any]:
    """What a ``requestState`` is bound to: the method, its target, the arguments, the principal."""
    method = req.message.method
    if method == "resources/read":
        return {"m": method, "t": req.params.get("uri"), "p": req.principal}
    return {"m": method, "t": req.params.get("name"), "a": arguments_digest(req.params.get("arguments") or {}),
            "p": req.principal}


def inputs(core: Core, req: Request) -> tuple[dict[str, Any], bool]:
    """The answers a request brings (its ``inputResponses`` over those its verified ``requestState``
    carries from earlier rounds), and whether a ``requestState`` came and was verified.

    ``inputResponses`` without a ``requestState`` are taken as they are: they are the client's
    answers either way; the state only carries what the server had gathered before."""
    if req.era is not Era.MODERN or req.message.method not in INPUT_METHODS:
        return {}, False
    raw = req.params.get("inputResponses")
    if "inputResponses" in req.params and not isinstance(raw, dict):
        raise InvalidParams("inputResponses must be an object mapping each input request's key to its result")
    responses = dict(raw or {})
    token = req.params.get("requestState")
    if token is None or req.executing_task:
        return responses, False
    if not isinstance(token, str):
        raise InvalidParams("requestState must be a string")
    claims = core.signer.verify(token, binding(req), now=core.wall_clock())
    carried = claims.get("r")
    return ({**carried, **responses} if isinstance(carried, dict) else responses), True


def input_required(core: Core, req: Request, need: InputRequired) -> dict[str, Any]:
    """An ``InputRequiredResult``; its ``requestState`` carries the answers used so far."""
    if req.era is not Era.MODERN:
        raise ToolError("input required outside the modern era")
    out: dict[str, Any] = {"resultType": "input_required", "inputRequests": need.requests}
    if not req.executing_task:  # a task's own run keeps its answers in the queue, not in a token
        out["requestState"] = core.signer.sign({**binding(req), "r": need.answers}, now=core.wall_clock())
    return out
