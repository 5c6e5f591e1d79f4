"""Resources: list, templates, read (local or forwarded), subscribe (legacy)."""

from __future__ import annotations

import base64
from typing import Any

from triomcp.errors import InternalError, InvalidParams, RemoteError, ResourceNotFound, TriomcpError
from triomcp.mcp.config import AsyncHandler, SyncHandler
from triomcp.mcp.context import InputRequired, ToolContext
from triomcp.mcp.core import Core, Request
from triomcp.mcp.inputs import input_required
from triomcp.mcp.pagination import page
from triomcp.mcp.registry import ResourceDef
from triomcp.mcp.versions import Era

__all__ = ["Resources", "not_found"]


def not_found(req: Request, uri: str, why: str = "") -> InvalidParams | ResourceNotFound:
    """A missing resource: -32002 in the legacy era, -32602 in the modern era."""
    message = f"Resource not found: {uri}" + (f" ({why})" if why else "")
    if req.era is Era.MODERN:
        return InvalidParams(message, data={"uri": uri})
    return ResourceNotFound(message, data={"uri": uri})


def contents(uri: str, mime_type: str | None, body: str | bytes | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return body
    item: dict[str, Any] = {"uri": uri}
    if mime_type:
        item["mimeType"] = mime_type
    if isinstance(body, bytes):
        item["blob"] = base64.b64encode(body).decode("ascii")
    else:
        item["text"] = body
    return [item]


class Resources:
    def __init__(self, core: Core) -> None:
        self.core = core

    def handlers(self) -> tuple[dict[str, SyncHandler], dict[str, AsyncHandler]]:
        return ({"resources/list": self._list, "resources/templates/list": self._templates,
                 "resources/subscribe": self._subscribe, "resources/unsubscribe": self._unsubscribe},
                {"resources/read": self._read})

    def _list(self, req: Request) -> dict[str, Any]:
        items = [r.describe() for r in self.core.registry.resources()]
        return page(items, req.params.get("cursor"), size=self.core.config.page_size, key="resources")

    def _templates(self, req: Request) -> dict[str, Any]:
        items = [t.describe() for t in self.core.registry.templates()]
        return page(items, req.params.get("cursor"), size=self.core.config.page_size, key="resourceTemplates")

    @staticmethod
    def _subscribe(req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.subscriptions.add(str(req.params["uri"]))
        return {}

    @staticmethod
    def _unsubscribe(req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.subscriptions.discard(str(req.params["uri"]))
        return {}

    async def _read(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        uri = str(req.params["uri"])
        found = self.core.registry.find_resource(uri)
        forward = self.core.hooks.forward
        if found is not None and forward is not None:
            try:
                return await forward.read_resource(uri, req.principal)
            except RemoteError as err:
                raise not_found(req, uri, str(err)) from None
            except TriomcpError as err:  # the local node is not reachable
                raise InternalError(f"reading {uri}: {err.message}") from None
        if found is None:
            raise not_found(req, uri)
        definition, variables = found
        try:
            if isinstance(definition, ResourceDef):
                body = await definition.fn(ctx)
            else:
                body = await definition.fn(variables, ctx)
        except InputRequired as need:
            return input_required(self.core, req, need)
        except ResourceNotFound:
            raise not_found(req, uri) from None
        return {"contents": contents(uri, definition.mime_type, body)}
