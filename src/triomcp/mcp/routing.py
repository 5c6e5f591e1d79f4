"""Which node of a mesh serves an HTTP request: the one holding what the request names (sans-I/O).

A legacy session id, a task id and a ``requestState`` start with the owner tag of the node that
minted them (:mod:`triomcp._owner`). :func:`owner_named` reads the request for one:

- ``Mcp-Session-Id`` (every legacy request after ``initialize``: POST, the GET stream, DELETE);
- ``tasks/get``, ``tasks/update``, ``tasks/cancel``: ``params.taskId``;
- any request with a ``params.requestState`` (an input-required round);
- ``resources/read`` of a template with an
  :attr:`~triomcp.mcp.definitions.ResourceTemplateDef.owner_variable` (``triomcp://tasks/{task_id}``);
- ``tools/call`` of a tool with an :attr:`~triomcp.mcp.definitions.ToolDef.owner_argument`
  (the task tools' ``task_id``), or whose :attr:`~triomcp.mcp.definitions.ToolDef.peer_argument` names a node explicitly.

A modern request says in its routing headers (``Mcp-Method``, ``Mcp-Name``) what it is and what
it names; :func:`route` reads them first and parses the body only when they leave the answer
open (a tool that names a node in its arguments, a ``requestState``, a request routed elsewhere,
whose id the relay's error answer needs, or no modern headers) and the body holds one of those
keys. The headers are trusted only for requests the engine serves as modern, where it refuses any
header that disagrees with the body (-32020), so a header that lies is refused wherever it lands.
When the body was parsed, the request comes back carrying it (``HttpRequest.decoded``) and the
engine does not parse it again. A request that names nothing, or this node, is served here (the
transport asks only for requests that no peer relayed already).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from triomcp._owner import owner_tag, tag_of
from triomcp.mcp import jsonrpc
from triomcp.mcp.definitions import ResourceTemplateDef
from triomcp.mcp.headers import decode_header_value
from triomcp.mcp.outcomes import HttpRequest
from triomcp.mcp.registry import Registry
from triomcp.mcp.versions import MODERN_VERSIONS

__all__ = ["OwnerRoute", "owner_named", "route"]

TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel", "tasks/result"})
_KEYS = (b'"taskId"', b'"requestState"', b'"task_id"', b'"peer"', b'"uri"')


@dataclass(frozen=True)
class OwnerRoute:
    """Another node serves this request: the one with ``tag`` (or the peer ``peer`` names)."""

    tag: str
    peer: str | None = None
    """The peer id a ``peer`` argument names (its tag is ``tag``)."""
    request_id: str | int | None = None
    session: bool = False
    """A legacy session's request: if its node is gone, the session is (404, start a new one)."""


def owner_named(req: HttpRequest, *, own_tag: str, registry: Registry) -> OwnerRoute | None:
    """The node other than this one (tagged ``own_tag``) that holds what ``req`` names, if any."""
    return route(req, own_tag=own_tag, registry=registry)[0]


def route(req: HttpRequest, *, own_tag: str, registry: Registry) -> tuple[OwnerRoute | None, HttpRequest]:
    """:func:`owner_named`, and ``req`` again: carrying its decoded body when deciding parsed it."""
    if not own_tag:
        return None, req
    session_id = req.headers.get("mcp-session-id")
    if session_id is not None:
        tag = tag_of(session_id)
        return (OwnerRoute(tag, session=True) if tag is not None and tag != own_tag else None), req
    if req.method != "POST" or _local_by_headers(req, own_tag, registry) or not any(key in req.body for key in _KEYS):
        return None, req
    try:
        obj = jsonrpc.decode(req.body)
    except Exception:
        return None, req  # served here, where it gets its parse error
    req = replace(req, decoded=obj)
    if not isinstance(obj, dict) or not isinstance(obj.get("params"), dict):
        return None, req
    ident = obj.get("id") if isinstance(obj.get("id"), (str, int)) else None
    named = _named(obj.get("method"), obj["params"], registry)
    if named is None or named.tag == own_tag:
        return None, req
    return OwnerRoute(named.tag, named.peer, ident), req


def _local_by_headers(req: HttpRequest, own_tag: str, registry: Registry) -> bool:
    """The routing headers of a modern request alone show that this node serves it.

    Only for a request the engine serves as modern (``MCP-Protocol-Version`` of the modern era),
    which it refuses when a header and the body disagree. Left open (False): no ``Mcp-Method``,
    a ``requestState`` in the body, a tool that takes a node-naming argument, and anything that
    names another node (the relay's error answer needs the request's id, so the body is parsed)."""
    headers = req.headers
    raw_method = headers.get("mcp-method")
    if raw_method is None or headers.get("mcp-protocol-version") not in MODERN_VERSIONS or b'"requestState"' in req.body:
        return False
    method = decode_header_value(raw_method)
    raw_name = headers.get("mcp-name")
    name = decode_header_value(raw_name) if raw_name is not None else None
    if method == "tools/call":
        tool = registry.get_tool(name) if name is not None else None
        return tool is None or (tool.owner_argument is None and tool.peer_argument is None)
    if method in TASK_METHODS:
        if name is None or method == "tasks/result":
            return False
        tag = tag_of(name)
        return tag is None or tag == own_tag
    if method == "resources/read":
        if name is None:
            return False
        found = registry.find_resource(name)
        return found is None or not isinstance(found[0], ResourceTemplateDef) or not found[0].owner_variable \
            or tag_of(found[1].get(found[0].owner_variable)) in (None, own_tag)
    return method is not None  # nothing else names a node but a requestState


def _named(method: Any, params: dict[str, Any], registry: Registry) -> OwnerRoute | None:
    if method in TASK_METHODS and (tag := tag_of(params.get("taskId"))) is not None:
        return OwnerRoute(tag)
    if (tag := tag_of(params.get("requestState"))) is not None:
        return OwnerRoute(tag)
    if method == "resources/read" and isinstance(params.get("uri"), str):
        found = registry.find_resource(params["uri"])
        if found is not None and isinstance(found[0], ResourceTemplateDef) and found[0].owner_variable:
            tag = tag_of(found[1].get(found[0].owner_variable))
            return OwnerRoute(tag) if tag is not None else None
        return None
    if method != "tools/call" or not isinstance(params.get("arguments"), dict):
        return None
    name = params.get("name")
    tool = registry.get_tool(name) if isinstance(name, str) else None
    arguments = params["arguments"]
    if tool is None:
        return None
    peer = arguments.get(tool.peer_argument) if tool.peer_argument is not None else None
    if isinstance(peer, str) and peer:
        return OwnerRoute(owner_tag(peer), peer=peer)
    if tool.owner_argument is not None and (tag := tag_of(arguments.get(tool.owner_argument))) is not None:
        return OwnerRoute(tag)
    return None
