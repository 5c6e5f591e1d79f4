"""An example triomcp plugin: three tools a weather service might offer.

- ``temperature`` reports progress and logs while it asks a station;
- ``forget_city`` asks the user to confirm (elicitation) before it acts;
- ``climate_report`` is a slow job: it runs as a durable task when the client can take one.

A node finds it through the ``triomcp.plugins`` entry point ``weather``, which names
:func:`register`. The tools are module-level functions, so a test can also call them directly.
"""

from __future__ import annotations

import trio
from pydantic import BaseModel, Field
from triomcp.errors import ToolError
from triomcp.mcp import Registry, ToolContext

__all__ = ["City", "Forgotten", "Period", "Reading", "Report", "climate_report", "forget_city", "register",
           "temperature"]

STATIONS: dict[str, float] = {"oslo": 4.5, "lima": 19.0, "cairo": 31.0}
"""Today's readings, by city (a real plugin would ask a weather service)."""
WARMING_PER_YEAR = 0.03
CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "description": "forget them"}},
    "required": ["confirm"],
}


class City(BaseModel):
    city: str = Field(description="a city name, e.g. Oslo")


class Reading(BaseModel):
    city: str
    celsius: float


class Forgotten(BaseModel):
    city: str
    forgotten: bool


class Period(BaseModel):
    city: str = Field(description="a city name, e.g. Oslo")
    first_year: int = Field(ge=1900, le=2100)
    last_year: int = Field(ge=1900, le=2100)


class Report(BaseModel):
    city: str
    years: int
    mean_celsius: float


def _station(city: str) -> float:
    try:
        return STATIONS[city.lower()]
    except KeyError:
        raise ToolError(f"no station in {city}", code="unknown_city") from None


async def temperature(args: City, ctx: ToolContext) -> Reading:
    await ctx.report_progress(0.5, 1.0, "asking the station")
    celsius = _station(args.city)
    await ctx.log("info", {"city": args.city, "celsius": celsius})
    await ctx.report_progress(1.0, 1.0, "done")
    return Reading(city=args.city, celsius=celsius)


async def forget_city(args: City, ctx: ToolContext) -> Forgotten:
    _station(args.city)
    # Ask before acting: in the modern era the handler runs again from the start with the answer.
    answer = await ctx.elicit(f"Forget every reading of {args.city}?", CONFIRM_SCHEMA)
    confirmed = answer.get("action") == "accept" and (answer.get("content") or {}).get("confirm") is True
    return Forgotten(city=args.city, forgotten=confirmed)


async def climate_report(args: Period, ctx: ToolContext) -> Report:
    if args.last_year < args.first_year:
        raise ToolError("last_year comes before first_year", code="bad_period")
    today = _station(args.city)
    years = range(args.first_year, args.last_year + 1)
    readings = []
    for done, year in enumerate(years, start=1):
        readings.append(today + (year - 2000) * WARMING_PER_YEAR)
        await ctx.report_progress(done, len(years), f"year {year}")
        await trio.lowlevel.checkpoint()  # a long job stays cancellable
    return Report(city=args.city, years=len(years), mean_celsius=round(sum(readings) / len(readings), 2))


def register(registry: Registry) -> None:
    """The plugin's entry point: add the tools to a node's registry."""
    registry.tool(description="Current temperature in a city.", read_only=True, idempotent=True)(temperature)
    registry.tool(description="Forget a city's readings, once the user confirms.",
                  destructive=True)(forget_city)
    registry.tool(description="Yearly mean temperatures of a city over a period (slow: a durable task when "
                  "the client takes tasks).", read_only=True, task_support="optional")(climate_report)
