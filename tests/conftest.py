"""Shared fixtures.

Ground rules for every test here: no sleeps used as synchronisation, every
wait bounded (``trio.fail_after``), loopback only, real components (Hypercorn
on 127.0.0.1 port 0, real SQLite files, real libp2p hosts, the official MCP
client); mocks only to inject faults.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from starlette.applications import Starlette

from tests.toolkit import register_test_tools
from triomcp import testing
from triomcp.mcp.registry import Registry
from triomcp.server.app import create_app
from triomcp.server.serving import serve
from triomcp.settings import Settings

pytest_plugins = ["triomcp.testing.plugin", "tests.helpers.cli"]  # the latter: the data_dir fixture of the CLI tests


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """``triomcp.testing.make_settings``, with the task queue off unless a test turns it on."""
    queue = overrides.pop("taskqueue", {})
    return testing.make_settings(tmp_path, taskqueue={"enabled": False, **queue} if isinstance(queue, dict) else queue,
                                 **overrides)


@contextlib.asynccontextmanager
async def run_app(app: Starlette, **cfg: Any) -> AsyncIterator[str]:
    """Serve ``app`` as ``triomcp serve`` does (real Hypercorn, its request gate) on 127.0.0.1:0;
    yields the base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = cfg.pop("graceful_timeout", 2.0)
    config.errorlog = None
    for key, value in cfg.items():
        setattr(config, key, value)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                      gate=app.state.services.request_gate, task_status=task_status)
        )
        try:
            yield binds[0]
        finally:
            app.state.services.stopping.set()
            app.state.services.engine.close_listeners()
            stop.set()


@pytest.fixture
def app_factory(tmp_path: Path) -> Callable[..., Starlette]:
    def factory(configure: Callable[[Registry], None] | None = register_test_tools, **overrides: Any) -> Starlette:
        return create_app(make_settings(tmp_path, **overrides), configure=configure)

    return factory


@pytest.fixture
async def server(app_factory: Callable[..., Starlette]) -> AsyncIterator[str]:
    """A running server with the test tools; yields ``http://127.0.0.1:<port>``."""
    async with run_app(app_factory()) as url:
        yield url
