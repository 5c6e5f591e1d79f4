"""Prompts (list, get) and argument completion."""

from __future__ import annotations

from typing import Any

from triomcp.errors import InvalidParams
from triomcp.mcp.config import AsyncHandler, SyncHandler
from triomcp.mcp.context import InputRequired, ToolContext
from triomcp.mcp.core import Core, Request
from triomcp.mcp.inputs import input_required
from triomcp.mcp.pagination import page

__all__ = ["Prompts"]

MAX_COMPLETIONS = 100


class Prompts:
    def __init__(self, core: Core) -> None:
        self.core = core

    def handlers(self) -> tuple[dict[str, SyncHandler], dict[str, AsyncHandler]]:
        return {"prompts/list": self._list}, {"prompts/get": self._get, "completion/complete": self._complete}

    def _list(self, req: Request) -> dict[str, Any]:
        items = [p.describe() for p in self.core.registry.prompts()]
        return page(items, req.params.get("cursor"), size=self.core.config.page_size, key="prompts")

    async def _get(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        name = str(req.params["name"])
        prompt = self.core.registry.get_prompt(name)
        if prompt is None:
            raise InvalidParams(f"Unknown prompt: {name}")
        arguments = {str(k): str(v) for k, v in (req.params.get("arguments") or {}).items()}
        missing = [n for n, _d, required in prompt.arguments if required and n not in arguments]
        if missing:
            raise InvalidParams(f"Missing required prompt arguments: {', '.join(missing)}")
        try:
            messages = await prompt.fn(arguments, ctx)
        except InputRequired as need:
            return input_required(self.core, req, need)
        result: dict[str, Any] = {"messages": messages}
        if prompt.description:
            result["description"] = prompt.description
        return result

    async def _complete(self, req: Request, ctx: ToolContext) -> dict[str, Any]:
        ref, argument = req.params["ref"], req.params["argument"]
        ref_type = ref.get("type")
        key = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
        if ref_type == "ref/prompt" and self.core.registry.get_prompt(str(key)) is None:
            raise InvalidParams(f"Unknown prompt: {key}")
        context = req.params.get("context") or {}
        completer = self.core.registry.completer(str(ref_type), str(key), str(argument["name"]))
        values: list[str] = []
        if completer is not None:
            values = await completer(str(argument.get("value", "")), dict(context.get("arguments") or {}))
        return {"completion": {"values": values[:MAX_COMPLETIONS], "total": len(values),
                               "hasMore": len(values) > MAX_COMPLETIONS}}
