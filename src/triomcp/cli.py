"""The ``triomcp`` command line.

Size: eleven thin commands over one set of helpers (settings, ``_run`` and its exit codes, a
short-lived CLI node); splitting them across modules would load libp2p for every command or need a
lazy command group, for no second concept.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from triomcp import __version__
from triomcp.errors import ConfigError
from triomcp.logs import setup_logging
from triomcp.settings import Settings, load_settings

if TYPE_CHECKING:
    from triomcp.p2p import Node

__all__ = ["main"]


def _fail(message: object, status: int = 2) -> NoReturn:
    """Say what went wrong in one line and exit: 2 for a configuration or usage error, else 1."""
    click.echo(f"triomcp: {message}", err=True)
    sys.exit(status)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as err:
        _fail(err)


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
    from triomcp.server.runner import hypercorn_config, run_server

    settings = _settings()
    setup_logging(settings.log_level, settings.log_format)
    try:
        config = hypercorn_config(settings, config_path, list(bind) or None)
    except ConfigError as err:
        _fail(err)
    _run(run_server, settings, config, server=True)


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    settings = _settings()
    click.echo(json.dumps(json.loads(settings.model_dump_json()), indent=2))


# -- the libp2p side ---------------------------------------------------------------------------

def _run(fn: Callable[..., Any], *args: Any, server: bool = False) -> Any:
    """Run a Trio function for a command; an error becomes one clear line and an exit code.

    A command: any of our errors (exit 1); others propagate. The server (``server``): a
    configuration error (exit 2), any other error, startup failure or crashed service (exit 1).
    """
    import trio

    from triomcp.errors import TriomcpError

    try:
        return trio.run(fn, *args)
    except Exception as exc:
        if server:
            if isinstance(exc, ConfigError):
                _fail(exc)
            logging.getLogger("triomcp.server").debug("server error", exc_info=exc)
            _fail(f"the server stopped on an error: {_describe(exc)}", 1)
        ours = _find(exc, TriomcpError)
        if ours is None:
            raise
        _fail(ours, 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _describe(exc: BaseException) -> str:
    """The leaf errors of an exception (groups flattened), one per line after the first."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _find(exc: BaseException, kind: type[Exception]) -> Exception | None:
    """The first ``kind`` in ``exc`` or, for an exception group, anywhere inside it."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{what} is not valid JSON: {exc}")


@main.group()
def tokens() -> None:
    """Static bearer tokens for HTTP clients (auth.tokens_file)."""


@tokens.command("new")
@click.argument("principal")
@click.option("--scopes", default="triomcp:status", show_default=True,
              help="Comma-separated scopes (see auth.scopes), e.g. triomcp:status,triomcp:tasks.")
def tokens_new(principal: str, scopes: str) -> None:
    """Create a token for PRINCIPAL: its hash is appended to auth.tokens_file, the token printed once."""
    import re

    from triomcp.server.auth import Authenticator

    settings = _settings()
    tokens_file = Authenticator(settings.auth, settings.data_dir).tokens
    if tokens_file is None:
        raise click.ClickException("auth.tokens_file is not set (TRIOMCP_AUTH__TOKENS_FILE or the TOML file)")
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", principal):
        raise click.ClickException("PRINCIPAL: 1-64 characters of letters, digits and . _ @ -")
    wanted = [s for s in scopes.split(",") if s]
    unknown = [s for s in wanted if s not in settings.auth.scopes]
    if unknown or not wanted:
        raise click.ClickException(f"unknown scopes {unknown}; known: {sorted(settings.auth.scopes)}")
    click.echo(tokens_file.append(principal, wanted))
    click.echo(f"(added {principal} with {','.join(wanted)} to {tokens_file.path}; the token is not stored, "
               "keep it now)", err=True)


@main.command()
def node() -> None:
    """Run a standalone P2P node with its task queue and workers (no HTTP), until SIGTERM/SIGINT."""
    import signal

    import trio

    from triomcp.server.app import build_services
    from triomcp.server.heap import settle_heap
    from triomcp.server.lifespan import running_services
    from triomcp.server.sdnotify import notify

    settings = _settings()
    # The node is the node, whatever the shared configuration says about the HTTP server's mode.
    settings = settings.model_copy(update={"p2p": settings.p2p.model_copy(update={"mode": "embedded"})})
    setup_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        services = build_services(settings)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with running_services(services):
                node = services.node
                settle_heap()
                click.echo(f"node {node.peer_id if node else '(p2p disabled)'} ready", err=True)
                notify("READY=1")
                async for _ in signals:
                    notify("STOPPING=1")
                    break

    _run(run)


@main.command("id")
def show_id() -> None:
    """Print this data dir's node peer id and announced multiaddrs, then the running node's
    reachability (unknown, public or private), creating the identity if needed."""
    from triomcp.p2p import IDENTITY_FILE, read_announce
    from triomcp.p2p.identity import load_or_create_identity, peer_id_of

    settings = _settings()
    peer_id = peer_id_of(load_or_create_identity(settings.data_dir / IDENTITY_FILE))
    click.echo(peer_id)
    announced = read_announce(settings.data_dir)
    if announced and announced.get("peer_id") == peer_id:
        for addr in announced["multiaddrs"]:
            click.echo(addr)
        if isinstance(announced.get("reachability"), str):  # the running node's (p2p/reachability.py)
            click.echo(f"reachability: {announced['reachability']}")


@main.group()
def peers() -> None:
    """Manage the peers allowed to use this node (the authorized_peers file)."""


@peers.command("authorize")
@click.argument("peer_id")
@click.option("--label", default="", help="a note kept beside the id")
@click.option("--delegate/--no-delegate", default=None,
              help="let PEER_ID act for peers this node does not list (a relay or front node); "
                   "on an authorized peer, sets or clears the option")
def peers_authorize(peer_id: str, label: str, delegate: bool | None) -> None:
    """Allow PEER_ID to submit, claim, complete and call tools on this node."""
    from triomcp.p2p import AuthorizedPeers
    from triomcp.p2p.node import AUTHORIZED_FILE

    settings = _settings()
    peers = AuthorizedPeers(settings.data_dir / AUTHORIZED_FILE)
    try:
        known = peers.is_listed(peer_id)
        changed = peers.authorize(peer_id, label, delegate=delegate)
    except ConfigError as err:
        _fail(err)
    role = " (delegate)" if peers.is_delegate(peer_id) else ""
    said = "authorized" if not known else ("updated" if changed else "already authorized")
    click.echo(f"{said}: {peer_id}{role}")


@peers.command("list")
def peers_list() -> None:
    """List the authorized peers."""
    from triomcp.p2p import AuthorizedPeers
    from triomcp.p2p.node import AUTHORIZED_FILE

    settings = _settings()
    for entry in AuthorizedPeers(settings.data_dir / AUTHORIZED_FILE).entries():
        click.echo(entry.line())  # as in the file: [delegate] <peer id> [label]


def _with_peer(target: str | None, action: Callable[[Node, str], Awaitable[None]]) -> None:
    """Run ``action(node, peer)`` on a short-lived CLI node connected to ``target`` (a multiaddr,
    a peer id, or None for this data dir's node)."""
    from triomcp.peer_cli import cli_node, resolve_target

    settings = _settings()

    async def run() -> None:
        async with cli_node(settings) as node:
            await action(node, await resolve_target(node, settings, target))

    _run(run)


@main.command()
@click.argument("target")
@click.option("--count", default=3, show_default=True, help="number of pings")
def ping(target: str, count: int) -> None:
    """Ping a peer (a multiaddr ending in /p2p/<id>, or this data dir's node by its id)."""

    async def pings(node: Node, peer: str) -> None:
        for _ in range(count):
            rtt = await node.ping(peer)
            click.echo(f"{peer}: {rtt * 1000:.2f} ms")

    _with_peer(target, pings)


@main.command()
@click.argument("task_type")
@click.argument("payload")
@click.option("--peer", default=None, help="multiaddr of the node whose queue takes the task (default: local)")
@click.option("--priority", default=0, show_default=True)
@click.option("--idempotency-key", default=None)
@click.option("--wait", "wait_", is_flag=True, help="wait for the result, with a progress bar")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait with --wait")
def submit(task_type: str, payload: str, peer: str | None, priority: int, idempotency_key: str | None,
           wait_: bool, timeout: float) -> None:
    """Submit a task (PAYLOAD is JSON) and print it; --wait prints the finished task."""
    import trio

    from triomcp.peer_cli import tool

    data = _json_arg(payload, "PAYLOAD")

    async def run(node: Node, target: str) -> None:
        args: dict[str, Any] = {"task_type": task_type, "payload": data, "priority": priority}
        if idempotency_key:
            args["idempotency_key"] = idempotency_key
        out = await tool(node, target, "taskqueue_submit", args)
        if not wait_:
            click.echo(json.dumps(out["task"], indent=2))
            return
        with click.progressbar(length=100, label=f"task {out['task_id'][:12]}", file=sys.stderr) as bar:
            shown = 0

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                nonlocal shown
                value = int(100 * progress / (total or 1.0))
                if value > shown:
                    bar.update(value - shown)
                    shown = value

            with trio.fail_after(timeout + 10):
                waited = await tool(node, target, "taskqueue_wait",
                                    {"task_id": out["task_id"], "timeout_s": timeout}, on_progress=on_progress)
            if waited["finished"] and shown < 100:
                bar.update(100 - shown)
        click.echo(json.dumps(waited["task"], indent=2))
        if not waited["finished"]:
            _fail("the task did not finish within the timeout", 3)

    _with_peer(peer, run)


@main.command()
@click.argument("task_id")
@click.option("--peer", default=None, help="multiaddr of the node whose queue holds the task (default: local)")
def task(task_id: str, peer: str | None) -> None:
    """Print a task."""
    from triomcp.peer_cli import tool

    async def show(node: Node, target: str) -> None:
        click.echo(json.dumps((await tool(node, target, "taskqueue_get", {"task_id": task_id}))["task"], indent=2))

    _with_peer(peer, show)


@main.command()
@click.argument("peer")
@click.argument("tool_name")
@click.argument("arguments", default="{}")
def call(peer: str, tool_name: str, arguments: str) -> None:
    """Call TOOL_NAME on PEER (a multiaddr, or this data dir's node id) with ARGUMENTS (JSON)."""
    from triomcp.peer_cli import tool

    data = _json_arg(arguments, "ARGUMENTS")

    async def show(node: Node, target: str) -> None:
        out = await tool(node, target, tool_name, data)
        click.echo(json.dumps({"ok": True, **out}, indent=2))  # the result as the tool gave it

    _with_peer(peer, show)


if __name__ == "__main__":  # python -m triomcp.cli
    main()
