"""The built-in tools' schemas are portable, and the tools accept what their schemas say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import run_app
from tests.helpers.http import open_session
from triomcp.mcp.registry import ANY_JSON_SCHEMA, Registry
from triomcp.server.tools import register_builtin_tools

CONSTRAINING = {
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "format", "contentMediaType", "contentEncoding", "contentSchema",
    "maxItems", "minItems", "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties",
    "required", "dependentRequired", "allOf", "anyOf", "oneOf", "not", "items", "prefixItems", "contains",
    "additionalItems", "unevaluatedItems", "properties", "patternProperties", "additionalProperties",
    "unevaluatedProperties", "propertyNames", "dependentSchemas", "dependencies", "$ref",
}
"""What the MCP Inspector's ``--strict`` schema lint counts as constraining a value."""

SUBSCHEMA = ("items", "contains", "not", "propertyNames", "if", "then", "else", "additionalProperties",
             "unevaluatedProperties", "additionalItems", "unevaluatedItems", "contentSchema")
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SUBSCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


def portability_problems(node: Any, path: str = "", keyword: str | None = None) -> Iterator[str]:
    """The Inspector's three findings: a bare boolean schema, a schema that constrains nothing
    (``{}``), a ``type`` array."""
    if isinstance(node, bool):
        if keyword not in ("additionalProperties", "unevaluatedProperties", "additionalItems", "unevaluatedItems"):
            yield f"{path}: bare {node}"
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("type"), list):
        yield f"{path}: type array {node['type']}"
    if keyword != "not" and not (CONSTRAINING & set(node) or ("if" in node and ("then" in node or "else" in node))):
        yield f"{path}: constrains nothing"
    for key in SUBSCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            yield from portability_problems(sub, f"{path}.{key}.{name}", key)
    for key in SUBSCHEMA_LISTS:
        for i, sub in enumerate(node.get(key) or []):
            yield from portability_problems(sub, f"{path}.{key}[{i}]", key)
    for key in SUBSCHEMA:
        if key in node:
            yield from portability_problems(node[key], f"{path}.{key}", key)


def test_the_linter_finds_what_the_inspector_finds() -> None:
    assert list(portability_problems({"type": "object", "properties": {"v": {}}})) == [".properties.v: constrains nothing"]
    assert list(portability_problems({"type": ["string", "null"]})) == [": type array ['string', 'null']"]
    assert list(portability_problems(ANY_JSON_SCHEMA)) == []


def test_every_builtin_tool_schema_is_portable() -> None:
    registry = Registry()
    register_builtin_tools(registry)
    problems = [
        f"{tool.name} {kind}{problem}"
        for tool in registry.tools()
        for kind, schema in (("inputSchema", tool.input_schema), ("outputSchema", tool.output_schema))
        for problem in portability_problems(schema)
    ]
    assert problems == []
    submit = registry.get_tool("taskqueue_submit")
    assert submit is not None
    payload = submit.input_schema["properties"]["payload"]
    assert payload["default"] is None and payload["anyOf"] == ANY_JSON_SCHEMA["anyOf"]
    assert submit.output_schema["properties"]["error"]["properties"]["data"] == ANY_JSON_SCHEMA


@pytest.mark.parametrize("arguments", [{}, {"payload": None}, {"payload": [1, "two", {"three": 3.0}]}])
async def test_taskqueue_submit_takes_the_payload_its_schema_allows(app_factory: Any, arguments: dict[str, Any]) -> None:
    app = app_factory(taskqueue={"enabled": True})
    async with run_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        h = await open_session(c)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "taskqueue_submit", "arguments": {"task_type": "nobody.runs.this", **arguments}}}
        with trio.fail_after(10):
            result = (await c.post("/mcp", headers=h, json=call)).json()["result"]
        assert result["isError"] is False, result["structuredContent"]
        task_id = result["structuredContent"]["task_id"]
        assert result["structuredContent"]["task"]["payload"] == arguments.get("payload")
        get = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "taskqueue_get", "arguments": {"task_id": task_id}}}
        with trio.fail_after(10):
            stored = (await c.post("/mcp", headers=h, json=get)).json()["result"]["structuredContent"]
        assert stored["task"]["payload"] == arguments.get("payload")
