"""Fixtures of the suite's tool scenarios: content of every kind, notifications, asking the client.

One fixture per requirement the scenarios print under "Server Implementation Requirements"
(``tools-*``, ``elicitation-sep1034-defaults``, ``elicitation-sep1330-enums``,
``json-schema-2020-12``), under the names and with the answers they expect.

Tools here are unstructured (``structured=False``): their result is exactly the content blocks the
scenario names, as an ordinary MCP server would answer.
"""

from __future__ import annotations

from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from triomcp.conformance.common import Fixture, NoArguments, compact_json, text_result
from triomcp.conformance.media import RED_PIXEL_PNG, SILENCE_WAV
from triomcp.errors import ToolError
from triomcp.mcp import content
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import Registry, ToolDef, ToolResult

__all__ = [
    "DEFAULTS_SCHEMA",
    "ENUMS_SCHEMA",
    "JSON_SCHEMA_2020_12",
    "SCHEMA_2020_12_TOOL",
    "USER_DETAILS_SCHEMA",
    "ContactDetails",
    "ElicitMessage",
    "SamplingPrompt",
    "register",
]

STEP_DELAY = 0.05
"""Seconds between the log and progress notifications of one call (the scenarios ask for ~50 ms)."""


class SamplingPrompt(BaseModel):
    prompt: str = Field(description="The prompt to send to the client's model")


class ElicitMessage(BaseModel):
    message: str = Field(description="The message to show the user")


# -- tools: content of every kind ------------------------------------------------------------
async def simple_text(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return text_result("This is a simple text response for testing.")


async def image_content(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return ToolResult(content=[content.image(RED_PIXEL_PNG, "image/png")])


async def audio_content(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return ToolResult(content=[content.audio(SILENCE_WAV, "audio/wav")])


async def embedded_resource(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return ToolResult(content=[content.embedded_resource(
        "test://embedded-resource", text="This is an embedded resource content.", mime_type="text/plain")])


async def multiple_content_types(args: NoArguments, ctx: ToolContext) -> ToolResult:
    return ToolResult(content=[
        content.text("Multiple content types test:"),
        content.image(RED_PIXEL_PNG, "image/png"),
        content.embedded_resource("test://mixed-content-resource", text=compact_json({"test": "data", "value": 123}),
                                  mime_type="application/json"),
    ])


async def error_handling(args: NoArguments, ctx: ToolContext) -> ToolResult:
    raise ToolError("This tool intentionally returns an error for testing", code="intentional_error")


# -- tools: notifications during a call --------------------------------------------------------
async def tool_with_logging(args: NoArguments, ctx: ToolContext) -> ToolResult:
    await ctx.log("info", "Tool execution started")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool processing data")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool execution completed")
    return text_result("Tool with logging executed successfully")


async def tool_with_progress(args: NoArguments, ctx: ToolContext) -> ToolResult:
    await ctx.report_progress(0, 100)
    await trio.sleep(STEP_DELAY)
    await ctx.report_progress(50, 100)
    await trio.sleep(STEP_DELAY)
    await ctx.report_progress(100, 100)
    return text_result("Tool with progress executed successfully")


# -- tools: asking the client --------------------------------------------------------------------
async def sampling(args: SamplingPrompt, ctx: ToolContext) -> ToolResult:
    answer = await ctx.sample([{"role": "user", "content": {"type": "text", "text": args.prompt}}], max_tokens=100)
    block = answer.get("content")
    reply = block.get("text") if isinstance(block, dict) else None
    return text_result(f"LLM response: {reply if isinstance(reply, str) else compact_json(block)}")


USER_DETAILS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}


def _elicited(prefix: str, answer: dict[str, Any]) -> ToolResult:
    return text_result(f"{prefix}: action={answer.get('action')}, content={compact_json(answer.get('content') or {})}")


async def elicitation(args: ElicitMessage, ctx: ToolContext) -> ToolResult:
    return _elicited("User response", await ctx.elicit(args.message, USER_DETAILS_SCHEMA))


DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Your name", "default": "John Doe"},
        "age": {"type": "integer", "description": "Your age", "default": 30},
        "score": {"type": "number", "description": "Your score", "default": 95.5},
        "status": {"type": "string", "description": "Your status", "enum": ["active", "inactive", "pending"],
                   "default": "active"},
        "verified": {"type": "boolean", "description": "Whether you are verified", "default": True},
    },
}
"""SEP-1034: a default for every primitive type."""


async def elicitation_defaults(args: NoArguments, ctx: ToolContext) -> ToolResult:
    answer = await ctx.elicit("Please review your details (every field has a default).", DEFAULTS_SCHEMA)
    return _elicited("Elicitation completed", answer)


def _choices(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in pairs]


ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Pick one",
                           "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "description": "Pick one",
                         "oneOf": _choices([("value1", "First Option"), ("value2", "Second Option"),
                                            ("value3", "Third Option")])},
        "legacyEnum": {"type": "string", "description": "Pick one (legacy titles)",
                       "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Pick any",
                          "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "description": "Pick any",
                        "items": {"anyOf": _choices([("value1", "First Choice"), ("value2", "Second Choice"),
                                                     ("value3", "Third Choice")])}},
    },
}
"""SEP-1330: the five enum forms (untitled, titled, legacy ``enumNames``, and the two multi-selects)."""


async def elicitation_enums(args: NoArguments, ctx: ToolContext) -> ToolResult:
    answer = await ctx.elicit("Please choose (every kind of enum).", ENUMS_SCHEMA)
    return _elicited("Elicitation completed", answer)


# -- tools: a JSON Schema 2020-12 input schema ---------------------------------------------------
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        },
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}
"""SEP-1613/SEP-2106: ``$schema``, ``$defs`` with an ``$anchor``, composition, a conditional and a closed
object. A pydantic model cannot produce it, so the tool serves it verbatim
(``ToolDef.raw_input_schema``) and :class:`ContactDetails` validates the same rules."""

SCHEMA_2020_12_TOOL = "json_schema_2020_12_tool"


class Address(BaseModel):
    street: str | None = None
    city: str | None = None


class ContactDetails(BaseModel):
    """The arguments :data:`JSON_SCHEMA_2020_12` describes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    address: Address | None = None
    contact_method: Literal["phone", "email"] | None = Field(default=None, alias="contactMethod")
    phone: str | None = None
    email: str | None = None

    @model_validator(mode="after")
    def _reachable(self) -> ContactDetails:
        # if contactMethod is "phone" then phone is required, else email is (which also covers allOf).
        if self.contact_method == "phone" and self.phone is None:
            raise ValueError("contactMethod 'phone' needs a phone number")
        if self.contact_method != "phone" and self.email is None:
            raise ValueError("an email is required unless contactMethod is 'phone'")
        return self


async def json_schema_2020_12(args: ContactDetails, ctx: ToolContext) -> ToolResult:
    how = args.phone if args.contact_method == "phone" else args.email
    return text_result(f"Contact {args.name or 'someone'} at {how}")


# -- registration ----------------------------------------------------------------------------------
def register(registry: Registry) -> None:
    """Add the tool fixtures."""
    tools: list[tuple[str, str, Fixture]] = [
        ("test_simple_text", "Returns one text block.", simple_text),
        ("test_image_content", "Returns a PNG image (one red pixel).", image_content),
        ("test_audio_content", "Returns a WAV clip (100 ms of silence).", audio_content),
        ("test_embedded_resource", "Returns an embedded text resource.", embedded_resource),
        ("test_multiple_content_types", "Returns text, an image and an embedded resource.", multiple_content_types),
        ("test_error_handling", "Always fails (isError).", error_handling),
        ("test_tool_with_logging", "Sends three info log messages about 50 ms apart.", tool_with_logging),
        ("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100, about 50 ms apart.", tool_with_progress),
        ("test_sampling", "Asks the client's model to answer the prompt.", sampling),
        ("test_elicitation", "Asks the user for a username and an email.", elicitation),
        ("test_elicitation_sep1034_defaults", "Asks the user with a default for every primitive type.",
         elicitation_defaults),
        ("test_elicitation_sep1330_enums", "Asks the user with every kind of enum.", elicitation_enums),
    ]
    for name, description, fn in tools:
        registry.tool(name, description=description, structured=False)(fn)
    registry.add_tool(ToolDef(
        name=SCHEMA_2020_12_TOOL, description="Tool with JSON Schema 2020-12 features", fn=json_schema_2020_12,
        input_model=ContactDetails, output_model=None, structured=False, raw_input_schema=JSON_SCHEMA_2020_12))
