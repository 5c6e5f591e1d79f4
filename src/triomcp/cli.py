"""The ``triomcp`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from triomcp import __version__
from triomcp.errors import ConfigError
from triomcp.logs import setup_logging
from triomcp.settings import Settings, load_settings

__all__ = ["main"]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as err:
        click.echo(f"triomcp: {err}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="triomcp")
def main() -> None:
    """A Trio-native MCP server with a peer-to-peer durable task queue."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Hypercorn TOML (e.g. deploy/hypercorn.toml). Default: the http.* settings.")
@click.option("--bind", multiple=True, help="HOST:PORT, unix:/path or fd://3 (repeatable); overrides the config.")
def serve(config_path: Path | None, bind: tuple[str, ...]) -> None:
    """Run the MCP server (and its P2P node and task queue) until SIGTERM/SIGINT."""
    import trio

    from triomcp.server.runner import hypercorn_config, run_server

    settings = _settings()
    setup_logging(settings.log_level, settings.log_format)
    try:
        config = hypercorn_config(settings, config_path, list(bind) or None)
    except ConfigError as err:
        click.echo(f"triomcp: {err}", err=True)
        sys.exit(2)
    try:
        trio.run(run_server, settings, config)
    except ConfigError as err:
        click.echo(f"triomcp: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # startup failure or a crashed service: say so and exit non-zero
        click.echo(f"triomcp: the server stopped on an error: {type(err).__name__}: {err}", err=True)
        sys.exit(1)


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    settings = _settings()
    click.echo(json.dumps(json.loads(settings.model_dump_json()), indent=2))
