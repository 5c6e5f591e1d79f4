"""Plugins found through a real ``triomcp.plugins`` entry point (a dist-info on sys.path)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from triomcp.errors import ConfigError
from triomcp.mcp.plugins import load_plugins
from triomcp.mcp.registry import Registry

PLUGIN_SOURCE = '''
from pydantic import BaseModel
from triomcp.mcp import Registry, ToolContext

class City(BaseModel):
    city: str

class Reading(BaseModel):
    celsius: float

def register(registry: Registry) -> None:
    @registry.tool(description="Temperature of a city.", read_only=True)
    async def temperature(args: City, ctx: ToolContext) -> Reading:
        return Reading(celsius=21.5)

    @registry.resource("weather://stations", name="stations", mime_type="text/plain")
    async def stations(ctx: ToolContext) -> str:
        return "oslo\\nlima"

def broken(registry: Registry) -> None:
    raise RuntimeError("cannot reach the weather service")
'''


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "weather_plugin.py").write_text(PLUGIN_SOURCE)
    dist = tmp_path / "weather_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: weather-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[triomcp.plugins]\nweather = weather_plugin:register\nbroken = weather_plugin:broken\n"
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("weather_plugin", None)
        importlib.invalidate_caches()


def test_enabled_plugin_adds_tools_and_resources(installed_plugin: None) -> None:
    registry = Registry()
    assert load_plugins(registry, enabled=["weather"]) == ["weather"]
    assert registry.get_tool("temperature") is not None
    assert [r.uri for r in registry.resources()] == ["weather://stations"]


def test_disabled_plugins_are_skipped(installed_plugin: None) -> None:
    registry = Registry()
    assert load_plugins(registry, enabled=None, disabled=["broken", "weather"]) == []
    assert registry.tools() == []


def test_a_failing_plugin_stops_startup_with_its_name(installed_plugin: None) -> None:
    with pytest.raises(ConfigError, match="plugin 'broken' failed to load: RuntimeError"):
        load_plugins(Registry(), enabled=None)


def test_enabling_a_missing_plugin_is_refused(installed_plugin: None) -> None:
    with pytest.raises(ConfigError, match="not installed: nope"):
        load_plugins(Registry(), enabled=["nope"])


def test_settings_select_plugins_for_the_app(installed_plugin: None, tmp_path: Path) -> None:
    from triomcp.server.app import create_app

    app = create_app(make_settings(tmp_path, mcp={"plugins_enabled": ["weather"]}))
    tool = app.state.services.engine.registry.get_tool("temperature")
    assert tool is not None and tool.annotations == {"readOnlyHint": True}


def test_models_defined_inside_a_function_need_explicit_models() -> None:
    from pydantic import BaseModel

    from triomcp.mcp import ToolContext

    registry = Registry()

    class Local(BaseModel):
        x: int

    with pytest.raises(TypeError, match="pass input_model="):
        @registry.tool()
        async def broken(args: Local, ctx: ToolContext) -> Local:
            return args

    @registry.tool(input_model=Local, output_model=Local)
    async def works(args: Local, ctx: ToolContext) -> Local:
        return args

    tool = registry.get_tool("works")
    assert tool is not None and tool.input_schema["properties"]["x"]["type"] == "integer"
