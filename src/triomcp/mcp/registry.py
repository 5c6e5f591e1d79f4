"""The registry of tools, resources, resource templates, prompts and completions.

Tools are typed async functions::

    class EchoIn(BaseModel):
        text: str

    class EchoOut(BaseModel):
        text: str

    @registry.tool(description="Echo the text back.", read_only=True)
    async def echo(args: EchoIn, ctx: ToolContext) -> EchoOut:
        return EchoOut(text=args.text)

The input model gives ``inputSchema``; the output model gives ``outputSchema``.
Results are ``structuredContent`` shaped ``{ok: true, ...fields}`` mirrored as
JSON text; a raised :class:`~triomcp.errors.ToolError` (or any exception)
becomes ``isError: true`` with ``{ok: false, error: {code, message}}``.
A handler that wants extra content blocks (images, audio, embedded resources,
resource links) returns :class:`ToolResult`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from triomcp.mcp.definitions import (
    ANY_JSON_SCHEMA,
    TOOL_NAME_RE,
    AnyJson,
    Completer,
    PromptDef,
    PromptFn,
    ResourceDef,
    ResourceFn,
    ResourceTemplateDef,
    TemplateFn,
    ToolDef,
    ToolFn,
    ToolResult,
)

__all__ = [
    "ANY_JSON_SCHEMA",
    "TOOL_NAME_RE",
    "AnyJson",
    "Completer",
    "PromptDef",
    "Registry",
    "ResourceDef",
    "ResourceTemplateDef",
    "ToolDef",
    "ToolResult",
]

def _models(fn: ToolFn, input_model: type[BaseModel] | None,
            output_model: type[BaseModel] | None) -> tuple[type[BaseModel], type[BaseModel] | None]:
    """A tool's input and output models: given, or read from its annotations."""
    in_model, out_model = input_model, output_model
    if in_model is None:
        try:
            hints = typing.get_type_hints(fn)
        except NameError as exc:
            raise TypeError(
                f"tool {fn.__name__}: cannot resolve its annotations ({exc}); define the models at "
                "module level or pass input_model=/output_model= to registry.tool()"
            ) from None
        params = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
        if not params or params[0] not in hints:
            raise TypeError(f"tool {fn.__name__}: first parameter needs a pydantic model annotation")
        in_model = hints[params[0]]
        ret = hints.get("return")
        if out_model is None and isinstance(ret, type) and issubclass(ret, BaseModel):
            out_model = ret
    if not (isinstance(in_model, type) and issubclass(in_model, BaseModel)):
        raise TypeError(f"tool {fn.__name__}: input annotation must be a pydantic BaseModel")
    return in_model, out_model


class Registry:
    """What a node serves. Lists are deterministically ordered (by name / URI)."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolDef] = {}
        self._resources: dict[str, ResourceDef] = {}
        self._templates: dict[str, ResourceTemplateDef] = {}
        self._prompts: dict[str, PromptDef] = {}
        self._completers: dict[tuple[str, str, str], Completer] = {}
        self._listeners: list[Callable[[str], None]] = []
        self.version = 0
        """Bumped on every change (list_changed notifications and cache keys)."""

    # -- change notification -------------------------------------------------
    def on_change(self, listener: Callable[[str], None]) -> None:
        """``listener(kind)`` with kind ``tools``, ``resources`` or ``prompts``."""
        self._listeners.append(listener)

    def _changed(self, kind: str) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener(kind)

    # -- tools -----------------------------------------------------------------
    def tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        title: str | None = None,
        read_only: bool | None = None,
        destructive: bool | None = None,
        idempotent: bool | None = None,
        open_world: bool | None = None,
        group: str = "default",
        task_support: Literal["forbidden", "optional", "required"] = "forbidden",
        task_start: Literal["call", "handler"] = "call",
        structured: bool = True,
        input_model: type[BaseModel] | None = None,
        output_model: type[BaseModel] | None = None,
        owner_argument: str | None = None,
        peer_argument: str | None = None,
    ) -> Callable[[ToolFn], ToolFn]:
        """Register ``async def fn(args: InModel, ctx: ToolContext) -> OutModel``.

        The models come from the annotations, or from ``input_model``/``output_model`` when the
        annotations cannot be resolved (models defined inside a function, with postponed annotations).
        """

        def decorate(fn: ToolFn) -> ToolFn:
            in_model, out_model = _models(fn, input_model, output_model)
            hints = (("readOnlyHint", read_only), ("destructiveHint", destructive), ("idempotentHint", idempotent),
                     ("openWorldHint", open_world))
            annotations = {key: value for key, value in hints if value is not None}
            self.add_tool(ToolDef(
                name=name or fn.__name__, description=description or (fn.__doc__ or "").strip(), fn=fn,
                input_model=in_model, output_model=out_model, title=title, annotations=annotations or None,
                group=group, task_support=task_support, task_start=task_start, structured=structured,
                owner_argument=owner_argument, peer_argument=peer_argument))
            return fn

        return decorate

    def add_tool(self, tool: ToolDef) -> None:
        if not TOOL_NAME_RE.match(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match {TOOL_NAME_RE.pattern}")
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        self._changed("tools")

    def remove_tool(self, name: str) -> None:
        del self._tools[name]
        self._changed("tools")

    def get_tool(self, name: str) -> ToolDef | None:
        return self._tools.get(name)

    def tools(self) -> list[ToolDef]:
        return [self._tools[k] for k in sorted(self._tools)]

    # -- resources ---------------------------------------------------------------
    def resource(
        self, uri: str, *, name: str, description: str | None = None, mime_type: str | None = None
    ) -> Callable[[ResourceFn], ResourceFn]:
        def decorate(fn: ResourceFn) -> ResourceFn:
            if uri in self._resources:
                raise ValueError(f"resource {uri!r} is already registered")
            self._resources[uri] = ResourceDef(uri, name, fn, description, mime_type)
            self._changed("resources")
            return fn

        return decorate

    def resource_template(
        self, uri_template: str, *, name: str, description: str | None = None, mime_type: str | None = None,
        owner_variable: str | None = None,
    ) -> Callable[[TemplateFn], TemplateFn]:
        def decorate(fn: TemplateFn) -> TemplateFn:
            if uri_template in self._templates:
                raise ValueError(f"resource template {uri_template!r} is already registered")
            self._templates[uri_template] = ResourceTemplateDef(uri_template, name, fn, description, mime_type,
                                                                owner_variable)
            self._changed("resources")
            return fn

        return decorate

    def resources(self) -> list[ResourceDef]:
        return [self._resources[k] for k in sorted(self._resources)]

    def templates(self) -> list[ResourceTemplateDef]:
        return [self._templates[k] for k in sorted(self._templates)]

    def find_resource(self, uri: str) -> tuple[ResourceDef | ResourceTemplateDef, dict[str, str]] | None:
        if uri in self._resources:
            return self._resources[uri], {}
        for template in self.templates():
            found = template.match(uri)
            if found is not None:
                return template, found
        return None

    # -- prompts -------------------------------------------------------------------
    def prompt(
        self,
        name: str,
        *,
        description: str | None = None,
        arguments: list[tuple[str, str, bool]] | None = None,
    ) -> Callable[[PromptFn], PromptFn]:
        def decorate(fn: PromptFn) -> PromptFn:
            if name in self._prompts:
                raise ValueError(f"prompt {name!r} is already registered")
            self._prompts[name] = PromptDef(name, fn, description, tuple(arguments or ()))
            self._changed("prompts")
            return fn

        return decorate

    def prompts(self) -> list[PromptDef]:
        return [self._prompts[k] for k in sorted(self._prompts)]

    def get_prompt(self, name: str) -> PromptDef | None:
        return self._prompts.get(name)

    def remove_prompt(self, name: str) -> None:
        del self._prompts[name]
        self._changed("prompts")

    # -- completion ----------------------------------------------------------------
    def completion(self, ref_type: Literal["ref/prompt", "ref/resource"], ref: str, argument: str) -> Callable[
        [Completer], Completer
    ]:
        """Register candidates for a prompt argument or a resource-template variable."""

        def decorate(fn: Completer) -> Completer:
            self._completers[(ref_type, ref, argument)] = fn
            return fn

        return decorate

    def completer(self, ref_type: str, ref: str, argument: str) -> Completer | None:
        return self._completers.get((ref_type, ref, argument))
