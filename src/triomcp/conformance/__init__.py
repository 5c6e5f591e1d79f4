"""Fixtures for the official MCP conformance suite (``make conformance``).

Every tool, resource, resource template and prompt the suite's server scenarios call, under the
names the suite expects. Loaded only when ``mcp.conformance_fixtures`` is true, never by default:
a production node does not serve ``test_*`` tools. One module per feature: :mod:`.tools`,
:mod:`.resources`, :mod:`.prompts`, :mod:`.diagnostics` (fixtures that probe the protocol itself),
:mod:`.mrtr` (multi round-trip requests) and :mod:`.tasks` (the tasks extension).
"""

from __future__ import annotations

from triomcp.mcp.registry import Registry

__all__ = ["register"]


def register(registry: Registry) -> None:
    """Add every conformance fixture to ``registry``."""
    from triomcp.conformance import diagnostics, mrtr, prompts, resources, tasks, tools

    tools.register(registry)
    resources.register(registry)
    prompts.register(registry)
    diagnostics.register(registry)
    mrtr.register(registry)
    tasks.register(registry)
