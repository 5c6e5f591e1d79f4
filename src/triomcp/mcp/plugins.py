"""Plugins: other packages add tools, resources and prompts without forking a node.

A plugin is a callable ``register(registry: Registry) -> None`` published in
the ``triomcp.plugins`` entry-point group::

    # pyproject.toml of the plugin package
    [project.entry-points."triomcp.plugins"]
    weather = "weather_tools:register"

    # weather_tools.py
    def register(registry: Registry) -> None:
        @registry.tool(description="Current temperature for a city.", read_only=True)
        async def temperature(args: City, ctx: ToolContext) -> Reading: ...

Settings decide which installed plugins load (``mcp.plugins_enabled``,
``mcp.plugins_disabled``). A plugin that fails to load stops startup with a
message naming it: a node never runs with half its configured tools.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points

from triomcp.errors import ConfigError
from triomcp.mcp.registry import Registry

__all__ = ["PLUGIN_GROUP", "Plugin", "load_plugins"]

PLUGIN_GROUP = "triomcp.plugins"
Plugin = Callable[[Registry], None]


def load_plugins(
    registry: Registry,
    *,
    enabled: list[str] | None,
    disabled: Iterable[str] = (),
    available: Iterable[EntryPoint] | None = None,
) -> list[str]:
    """Load the selected plugins into ``registry``; returns the names loaded, in order."""
    found = {ep.name: ep for ep in (available if available is not None else entry_points(group=PLUGIN_GROUP))}
    skip = set(disabled)
    if enabled is not None:
        missing = [name for name in enabled if name not in found]
        if missing:
            raise ConfigError(
                f"mcp.plugins_enabled names plugins that are not installed: {', '.join(missing)} "
                f"(installed: {', '.join(sorted(found)) or 'none'})"
            )
        names = [n for n in enabled if n not in skip]
    else:
        names = sorted(n for n in found if n not in skip)
    loaded = []
    for name in names:
        try:
            plugin = found[name].load()
            plugin(registry)
        except Exception as exc:
            raise ConfigError(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
        loaded.append(name)
    return loaded
