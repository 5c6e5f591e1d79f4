"""Fixtures of the suite's resource scenarios (``resources-*``, and the template's ``completion-complete``).

Two static resources (text and a PNG), one to subscribe to, and a URI template whose ``id``
variable completes from a fixed list.
"""

from __future__ import annotations

from triomcp.conformance.common import compact_json
from triomcp.conformance.media import RED_PIXEL_PNG
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry

__all__ = ["ID_CANDIDATES", "TEMPLATE_URI", "register"]

TEMPLATE_URI = "test://template/{id}/data"
ID_CANDIDATES = ("1", "12", "123", "1234")


# -- resources -------------------------------------------------------------------------------------
async def static_text(ctx: ToolContext) -> str:
    return "This is the content of the static text resource."


async def static_binary(ctx: ToolContext) -> bytes:
    return RED_PIXEL_PNG


async def watched_resource(ctx: ToolContext) -> str:
    return "A resource clients subscribe to."


async def template_data(variables: dict[str, str], ctx: ToolContext) -> str:
    ident = variables["id"]
    return compact_json({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})


async def complete_id(value: str, other: dict[str, str]) -> list[str]:
    return [c for c in ID_CANDIDATES if c.startswith(value)]


# -- registration ----------------------------------------------------------------------------------
def register(registry: Registry) -> None:
    """Add the resource fixtures, the template and the completion of its ``id``."""
    registry.resource("test://static-text", name="static-text", description="A static text resource.",
                      mime_type="text/plain")(static_text)
    registry.resource("test://static-binary", name="static-binary", description="A static PNG image.",
                      mime_type="image/png")(static_binary)
    registry.resource("test://watched-resource", name="watched-resource",
                      description="A resource to subscribe to.", mime_type="text/plain")(watched_resource)
    registry.resource_template(TEMPLATE_URI, name="template-data", description="JSON data for an id.",
                               mime_type="application/json")(template_data)
    registry.completion("ref/resource", TEMPLATE_URI, "id")(complete_id)
