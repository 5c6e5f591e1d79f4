"""pytest fixtures for tools and plugins: a node running in-process, and a client of it.

Opt in from the ``conftest.py`` at the top of your tests (nothing loads it behind your back)::

    pytest_plugins = ["triomcp.testing.plugin"]

The fixtures are Trio fixtures: they need pytest-trio (``trio_mode = true``, or ``@pytest.mark.trio``).

- ``mcp_settings``: the node's :class:`~triomcp.settings.Settings` (:func:`make_settings`: data in
  ``tmp_path``, libp2p off, the task queue on); override the fixture to change them.
- ``mcp_configure``: a ``configure(registry)`` the node calls after the installed plugins load (None by
  default); override it to serve tools that are not installed as a plugin.
- ``mcp_app``: the node (``create_app``) running in-process, lifespan included: an :class:`InProcessApp`.
- ``mcp_era``: ``"modern"``; parametrize it (``@pytest.mark.parametrize("mcp_era", ["modern", "legacy"])``)
  to run a test in both eras.
- ``mcp_client``: an :class:`McpTestClient` of ``mcp_app`` in ``mcp_era``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

import pytest

from triomcp.mcp import Registry
from triomcp.server.app import create_app
from triomcp.settings import Settings
from triomcp.testing.asgi import InProcessApp
from triomcp.testing.client import McpTestClient
from triomcp.testing.settings import make_settings

__all__ = ["mcp_app", "mcp_client", "mcp_configure", "mcp_era", "mcp_settings"]


@pytest.fixture
def mcp_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def mcp_configure() -> Callable[[Registry], None] | None:
    return None


@pytest.fixture
async def mcp_app(mcp_settings: Settings, mcp_configure: Callable[[Registry], None] | None) -> AsyncIterator[InProcessApp]:
    async with InProcessApp(create_app(mcp_settings, configure=mcp_configure)) as node:
        yield node


@pytest.fixture
def mcp_era() -> Literal["modern", "legacy"]:
    return "modern"


@pytest.fixture
async def mcp_client(mcp_app: InProcessApp, mcp_era: Literal["modern", "legacy"]) -> AsyncIterator[McpTestClient]:
    async with McpTestClient(mcp_app, era=mcp_era) as client:
        yield client
