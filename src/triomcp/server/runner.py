"""``triomcp serve``: Hypercorn's Trio server with our own signal handling.

Why not the ``hypercorn`` CLI: its master process exits 0 when the worker
dies, and a process-group SIGTERM (systemd's default) kills the worker with no
drain. Here one process serves, SIGTERM/SIGINT drain in-flight requests within
``graceful_timeout`` and run the lifespan exit, and the exit code is honest. It serves with
:func:`triomcp.server.serving.serve`: Hypercorn's Trio server with listeners that take every
waiting connection per turn, not one (see that module).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from triomcp.errors import ConfigError
from triomcp.server.app import create_app
from triomcp.server.heap import settle_heap
from triomcp.server.sdnotify import notify
from triomcp.server.serving import serve
from triomcp.settings import Settings

__all__ = ["hypercorn_config", "run_server"]

log = logging.getLogger("triomcp.server")


def hypercorn_config(settings: Settings, config_path: Path | None, bind: list[str] | None) -> Config:
    """Hypercorn's settings: the TOML file when given, else ours; ``--bind`` wins."""
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"--config {config_path}: no such file")
        config = Config.from_toml(str(config_path))
        if config.workers != 1:
            raise ConfigError(
                f"{config_path}: workers = {config.workers}, but a triomcp node must run as one process: "
                "its peer identity, listen port and task queue belong to that process, and legacy sessions "
                "live in its memory. Set workers = 1 and scale out by adding nodes to the mesh."
            )
        if getattr(config, "worker_class", "trio") not in ("trio",):
            raise ConfigError(f"{config_path}: worker_class must be \"trio\" (got {config.worker_class!r})")
        if config.errorlog == "-":
            config.errorlog = None  # hypercorn.error then goes through our log handler, once
    else:
        config = Config()
        config.bind = list(settings.http.bind)
        config.graceful_timeout = settings.http.graceful_timeout
        config.keep_alive_timeout = settings.http.keep_alive_timeout
        config.backlog = settings.http.backlog
        config.include_server_header = False
        config.errorlog = None  # hypercorn.error propagates to our root handler
        if settings.http.access_log:
            config.accesslog = "-"
    if bind:
        config.bind = bind
    return config


def _loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.") or url.startswith("unix:")


async def run_server(settings: Settings, config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return (raises when startup fails)."""
    app = create_app(settings)
    services = app.state.services
    shutdown = trio.Event()

    async def watch_signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s: draining (graceful timeout %.1fs)", signal.Signals(signum).name,
                         config.graceful_timeout)
                notify("STOPPING=1")
                services.stopping.set()
                services.engine.close_listeners()
                shutdown.set()
                return

    served = trio.Event()

    async def run_serve(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            # Starlette's ASGI signature is looser than hypercorn's own ASGIFramework protocol; it is one.
            await serve(cast(ASGIFramework, app), config, shutdown_trigger=shutdown.wait,
                        gate=services.request_gate, task_status=task_status)
        finally:
            served.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        binds = await nursery.start(run_serve)  # returns once the lifespan is up and sockets are bound
        for bind in binds:
            log.info("serving MCP on %s/mcp", bind)
            if not settings.auth.enabled and not _loopback(bind):
                log.warning("serving %s without authorization: anyone who can reach it may call every tool "
                            "(set auth.tokens_file or auth.oauth_issuer; see docs/operations.md)", bind)
        frozen = settle_heap()
        log.debug("froze %d startup objects out of the collector's full passes", frozen)
        notify("READY=1")
        await served.wait()  # SIGTERM/SIGINT -> drain -> lifespan exit -> serve() returns
        nursery.cancel_scope.cancel()
