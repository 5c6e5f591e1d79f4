"""Fixtures of the suite's prompt scenarios (``prompts-*``, and the prompt arguments' ``completion-complete``).

Prompts without arguments, with two (which complete from a fixed list), embedding a resource, and
with an image.
"""

from __future__ import annotations

from typing import Any

from triomcp.conformance.media import RED_PIXEL_PNG
from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry

__all__ = ["ARGUMENT_CANDIDATES", "register"]

ARGUMENT_CANDIDATES = ("paris", "park", "party", "test", "testValue1", "testValue2")


# -- prompts ---------------------------------------------------------------------------------------
def _user(block: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": block}


async def simple_prompt(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    return [_user(content.text("This is a simple prompt for testing."))]


async def prompt_with_arguments(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    return [_user(content.text(
        f"Prompt with arguments: arg1='{arguments['arg1']}', arg2='{arguments['arg2']}'"))]


async def prompt_with_embedded_resource(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    return [
        _user(content.embedded_resource(arguments["resourceUri"], text="Embedded resource content for testing.",
                                        mime_type="text/plain")),
        _user(content.text("Please process the embedded resource above.")),
    ]


async def prompt_with_image(arguments: dict[str, str], ctx: ToolContext) -> list[dict[str, Any]]:
    return [_user(content.image(RED_PIXEL_PNG, "image/png")), _user(content.text("Please analyze the image above."))]


async def complete_argument(value: str, other: dict[str, str]) -> list[str]:
    return [c for c in ARGUMENT_CANDIDATES if c.startswith(value)]


# -- registration ----------------------------------------------------------------------------------
def register(registry: Registry) -> None:
    """Add the prompt fixtures and the completion of ``test_prompt_with_arguments``' arguments."""
    registry.prompt("test_simple_prompt", description="A prompt without arguments.")(simple_prompt)
    registry.prompt("test_prompt_with_arguments", description="A prompt with two arguments.",
                    arguments=[("arg1", "First test argument", True),
                               ("arg2", "Second test argument", True)])(prompt_with_arguments)
    registry.prompt("test_prompt_with_embedded_resource", description="A prompt embedding a resource.",
                    arguments=[("resourceUri", "URI of the resource to embed", True)])(prompt_with_embedded_resource)
    registry.prompt("test_prompt_with_image", description="A prompt with an image.")(prompt_with_image)
    for argument in ("arg1", "arg2"):
        registry.completion("ref/prompt", "test_prompt_with_arguments", argument)(complete_argument)
