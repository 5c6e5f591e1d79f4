"""Finding and keeping peers — one code path for the server and the CLI.

Sources, in order: explicit multiaddrs, the bootstrap list (kept connected with
exponential backoff and jitter), the peers remembered from earlier runs, the
announce file of a node on the same machine, and mDNS (opt-in; it starts
zeroconf threads and multicasts, so it is off by default).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from triomcp.errors import ConfigError, PeerError

__all__ = ["ANNOUNCE_FILE", "keep_connected", "peer_id_in", "read_announce", "write_announce"]

log = logging.getLogger("triomcp.p2p")

ANNOUNCE_FILE = "announce.json"


def peer_id_in(multiaddr: str) -> str:
    """The ``/p2p/<id>`` part of a multiaddr (required to dial with Noise)."""
    _, sep, rest = multiaddr.rpartition("/p2p/")
    if not sep or not rest or "/" in rest:
        raise ConfigError(f"multiaddr {multiaddr!r} must end in /p2p/<peer id>")
    return rest


def write_announce(data_dir: Path, peer_id: str, addrs: list[str]) -> Path:
    """Atomically record this node's real listen multiaddrs for local tools and peers."""
    path = data_dir / ANNOUNCE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"peer_id": peer_id, "multiaddrs": addrs, "pid": os.getpid()}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_announce(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / ANNOUNCE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("multiaddrs"), list):
        raise ConfigError(f"{path} has no multiaddrs")
    return data


async def keep_connected(
    multiaddr: str,
    connect: Callable[[str], Awaitable[str]],
    is_connected: Callable[[str], bool],
    wait_changed: Callable[[], Awaitable[None]],
    *,
    base: float = 0.5,
    cap: float = 60.0,
) -> None:
    """Dial ``multiaddr`` until connected; redial when the connection drops (woken by the node's
    connection events, not by polling), with exponential backoff and jitter between failures."""
    peer_id = peer_id_in(multiaddr)
    failures = 0
    while True:
        if not is_connected(peer_id):
            try:
                await connect(multiaddr)
                log.info("connected to bootstrap peer %s", multiaddr)
                failures = 0
            except PeerError as exc:
                failures += 1
                delay = random.uniform(0, min(cap, base * 2 ** failures))
                log.info("bootstrap peer %s unreachable (%s); retrying in %.1fs", multiaddr, exc, delay)
                await trio.sleep(delay)
                continue
        await wait_changed()
