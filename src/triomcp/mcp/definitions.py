"""What a registry holds: the definitions of tools, resources, resource templates and prompts,
and the wire objects (``Tool``, ``Resource``, ...) they describe themselves as."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, WithJsonSchema

from triomcp.mcp.context import ToolContext

__all__ = [
    "ANY_JSON_SCHEMA",
    "TOOL_NAME_RE",
    "AnyJson",
    "Completer",
    "PromptDef",
    "PromptFn",
    "ResourceDef",
    "ResourceFn",
    "ResourceTemplateDef",
    "TemplateFn",
    "ToolDef",
    "ToolFn",
    "ToolResult",
]

TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

ANY_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": t} for t in ("object", "array", "string", "number", "boolean", "null")]
}
"""Any JSON value, spelled out. ``{}`` means the same but reads to schema checkers (MCP Inspector
``--strict``) as a forgotten type, and a ``type`` array is less portable (single-type dialects
such as Gemini's reject it), so: one single-type ``anyOf`` branch per JSON type."""

AnyJson = Annotated[Any, WithJsonSchema(ANY_JSON_SCHEMA)]
"""A model field that holds any JSON value (a payload, a cached value), with :data:`ANY_JSON_SCHEMA`."""

ToolFn = Callable[[Any, ToolContext], Awaitable[Any]]
ResourceFn = Callable[[ToolContext], Awaitable["str | bytes | list[dict[str, Any]]"]]
TemplateFn = Callable[[dict[str, str], ToolContext], Awaitable["str | bytes | list[dict[str, Any]]"]]
PromptFn = Callable[[dict[str, str], ToolContext], Awaitable[list[dict[str, Any]]]]
Completer = Callable[[str, dict[str, str]], Awaitable[list[str]]]
"""``async (partial value, other resolved arguments) -> candidate values``."""


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer with extra content blocks beside the structured data."""

    data: BaseModel | dict[str, Any] | None = None
    content: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ToolDef:
    name: str
    description: str
    fn: ToolFn
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    title: str | None = None
    annotations: dict[str, Any] | None = None
    group: str = "default"
    """Authorization group (scopes map to groups)."""
    task_support: Literal["forbidden", "optional", "required"] = "forbidden"
    task_start: Literal["call", "handler"] = "call"
    """When a call that may be a task becomes one: at once (``"call"``), or when the handler awaits
    ``ctx.run_as_task()`` (``"handler"``: it runs inline until then, and may ask for input first)."""
    owner_argument: str | None = None
    """An argument holding an id minted by one node of a mesh (``task_id``): the call is served by
    the node the id names (:mod:`triomcp.mcp.routing`), unless :attr:`peer_argument` names another."""
    peer_argument: str | None = None
    """An argument naming, by peer id, the node of the mesh that serves the call (``peer``)."""
    structured: bool = True
    """False: the tool's result is exactly the content blocks it returns (``ToolResult.content``), with
    no ``structuredContent`` and no ``outputSchema``; a failure is an ``isError`` text block."""

    raw_input_schema: dict[str, Any] | None = None
    """A JSON Schema served as ``inputSchema`` verbatim instead of the input model's, for keywords a
    pydantic model cannot produce (``$anchor``, ``if``/``then``/``else``, hand-named ``$defs``).
    Arguments are still validated by ``input_model``, so the two must agree."""

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        if self.raw_input_schema is not None:
            return dict(self.raw_input_schema)
        schema = self.input_model.model_json_schema()
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return schema

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        """Success ``{ok: true, ...model}`` or failure ``{ok: false, error}``."""
        ok_props: dict[str, Any] = {}
        required: list[str] = []
        defs: dict[str, Any] = {}
        if self.output_model is not None:
            model_schema = self.output_model.model_json_schema()
            ok_props = dict(model_schema.get("properties", {}))
            required = list(model_schema.get("required", []))
            defs = dict(model_schema.get("$defs", {}))
        error_schema = {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "data": ANY_JSON_SCHEMA},
            "required": ["code", "message"],
        }
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "error": error_schema, **ok_props},
            "required": ["ok"],
            "anyOf": [
                {"properties": {"ok": {"const": True}}, "required": ["ok", *required]},
                {"properties": {"ok": {"const": False}}, "required": ["ok", "error"]},
            ],
        }
        if defs:
            schema["$defs"] = defs
        return schema

    @cached_property
    def header_params(self) -> dict[str, str]:
        """Top-level arguments mirrored as ``Mcp-Param-<Name>`` headers (``x-mcp-header``)."""
        out: dict[str, str] = {}
        for prop, spec in self.input_schema.get("properties", {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("x-mcp-header"), str):
                out[prop] = spec["x-mcp-header"]
        return out

    @cached_property
    def describe(self) -> dict[str, Any]:
        """The ``Tool`` wire object."""
        tool: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if self.structured:
            tool["outputSchema"] = self.output_schema
        if self.title:
            tool["title"] = self.title
        if self.annotations:
            tool["annotations"] = self.annotations
        if self.task_support != "forbidden":
            tool["execution"] = {"taskSupport": self.task_support}
        return tool


def _resource_shape(out: dict[str, Any], description: str | None, mime_type: str | None) -> dict[str, Any]:
    """A ``Resource`` or ``ResourceTemplate``: the identifying fields, then the optional ones."""
    if description:
        out["description"] = description
    if mime_type:
        out["mimeType"] = mime_type
    return out


@dataclass(frozen=True)
class ResourceDef:
    uri: str
    name: str
    fn: ResourceFn
    description: str | None = None
    mime_type: str | None = None

    def describe(self) -> dict[str, Any]:
        return _resource_shape({"uri": self.uri, "name": self.name}, self.description, self.mime_type)


@dataclass(frozen=True)
class ResourceTemplateDef:
    """A URI template with simple ``{var}`` expressions (RFC 6570 level 1)."""

    uri_template: str
    name: str
    fn: TemplateFn
    description: str | None = None
    mime_type: str | None = None
    owner_variable: str | None = None
    """A variable holding an id minted by one node of a mesh (``task_id``): a read is served by the
    node the id names (:mod:`triomcp.mcp.routing`)."""

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{[a-zA-Z_][a-zA-Z0-9_]*\})", self.uri_template)
        regex = "".join(
            f"(?P<{p[1:-1]}>[^/?#]+)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts
        )
        return re.compile(f"^{regex}$")

    def match(self, uri: str) -> dict[str, str] | None:
        m = self.pattern.match(uri)
        return m.groupdict() if m else None

    def describe(self) -> dict[str, Any]:
        return _resource_shape({"uriTemplate": self.uri_template, "name": self.name}, self.description,
                               self.mime_type)


@dataclass(frozen=True)
class PromptDef:
    name: str
    fn: PromptFn
    description: str | None = None
    arguments: tuple[tuple[str, str, bool], ...] = ()
    """``(name, description, required)`` for each argument."""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.arguments:
            out["arguments"] = [
                {"name": n, "description": d, "required": r} for n, d, r in self.arguments
            ]
        return out
