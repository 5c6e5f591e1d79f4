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

The body is parsed only when it holds one of those keys; a request that names nothing, or this
node, is served here (the transport calls this only for requests that no peer relayed already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triomcp._owner import owner_tag, tag_of
from triomcp.mcp import jsonrpc
from triomcp.mcp.definitions import ResourceTemplateDef
from triomcp.mcp.outcomes import HttpRequest
from triomcp.mcp.registry import Registry

__all__ = ["OwnerRoute", "owner_named"]

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
    if not own_tag:
        return None
    session_id = req.headers.get("mcp-session-id")
    if session_id is not None:
        tag = tag_of(session_id)
        return OwnerRoute(tag, session=True) if tag is not None and tag != own_tag else None
    if req.method != "POST" or not any(key in req.body for key in _KEYS):
        return None
    try:
        obj = jsonrpc.decode(req.body)
    except Exception:
        return None  # served here, where it gets its parse error
    if not isinstance(obj, dict) or not isinstance(obj.get("params"), dict):
        return None
    ident = obj.get("id") if isinstance(obj.get("id"), (str, int)) else None
    route = _named(obj.get("method"), obj["params"], registry)
    if route is None or route.tag == own_tag:
        return None
    return OwnerRoute(route.tag, route.peer, ident)


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
