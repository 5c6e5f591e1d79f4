"""triomcp.testing's pytest fixtures, serving this plugin alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from triomcp.mcp import Registry
from triomcp.settings import Settings
from triomcp.testing import make_settings

from weather_tools import register

pytest_plugins = ["triomcp.testing.plugin"]


@pytest.fixture
def mcp_settings(tmp_path: Path) -> Settings:
    # No installed plugin loads (this one may not be installed; others may be): `configure` adds it.
    return make_settings(tmp_path, mcp={"plugins_enabled": []})


@pytest.fixture
def mcp_configure() -> Callable[[Registry], None]:
    return register
