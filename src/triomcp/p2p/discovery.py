"""Finding and keeping peers — one code path for the server and the CLI.

Sources, in order: explicit multiaddrs, the bootstrap list (kept connected by
:func:`keep_connected`, the one reconnect loop, with exponential backoff and full jitter),
the peers remembered from earlier runs, the announce file of a node on the same machine, and
mDNS (opt-in; it starts zeroconf threads and multicasts, so it is off by default).

py-libp2p's mDNS only fills the peerstore and fires a process-wide event, from a
zeroconf thread; ``MdnsFinds`` hands those finds to Trio and ``dial_found`` dials
the ones this node lists in ``authorized_peers``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

from triomcp._retry import Backoff
from triomcp.errors import ConfigError, PeerError

__all__ = ["ANNOUNCE_FILE", "MdnsFinds", "dial_found", "keep_bootstrap_connected", "keep_connected",
           "peer_id_in", "reachable_from_elsewhere", "read_announce", "write_announce"]

log = logging.getLogger("triomcp.p2p")

ANNOUNCE_FILE = "announce.json"
MDNS_BACKLOG = 256
"""Finds waiting to be dialed; more are dropped (the peer stays in the peerstore)."""


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
    target: Callable[[], Awaitable[str]],
    connect: Callable[[str], Awaitable[str]],
    is_connected: Callable[[str], bool],
    wait_changed: Callable[[], Awaitable[None]],
    *,
    what: str,
    peer_id: str | None = None,
    transient: tuple[type[Exception], ...] = (PeerError,),
    backoff: Backoff | None = None,
    logger: logging.Logger = log,
) -> None:
    """Dial ``await target()`` (a multiaddr) until connected; redial when the connection drops
    (woken by the node's connection events, not by polling), with :class:`~triomcp._retry.Backoff`
    between failures. ``transient`` errors (from ``target`` or ``connect``) are retried; others end
    the loop. ``peer_id``: whom ``target`` names, if known before the first dial (else the id
    ``connect`` returns). ``what`` names the peer in the logs. The one reconnect loop: bootstrap
    peers (:func:`keep_bootstrap_connected`) and the local node of ``p2p.mode = "local-node"``."""
    backoff = backoff or Backoff(base=1.0, cap=60.0)
    failures = 0
    while True:
        if peer_id is None or not is_connected(peer_id):
            try:
                multiaddr = await target()
                peer_id = await connect(multiaddr)
            except transient as exc:
                failures += 1
                delay = backoff.delay(failures)
                logger.info("%s unreachable (%s); retrying in %.1fs", what, exc, delay)
                await trio.sleep(delay)
                continue
            logger.info("connected to %s %s", what, multiaddr)
            failures = 0
        await wait_changed()


async def keep_bootstrap_connected(
    multiaddr: str,
    connect: Callable[[str], Awaitable[str]],
    is_connected: Callable[[str], bool],
    wait_changed: Callable[[], Awaitable[None]],
) -> None:
    """Keep one bootstrap peer connected: full jitter up to 1, 2, 4 ... 60 s between failed dials."""
    async def target() -> str:
        return multiaddr

    await keep_connected(target, connect, is_connected, wait_changed, what="bootstrap peer",
                         peer_id=peer_id_in(multiaddr))


def _ip_of(multiaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    parts = multiaddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(parts[2])
        except ValueError:
            return None
    return None


def reachable_from_elsewhere(multiaddr: str) -> bool:
    """An IP multiaddr another machine could dial: neither loopback nor unspecified (0.0.0.0, ::)."""
    ip = _ip_of(multiaddr)
    return ip is not None and not ip.is_loopback and not ip.is_unspecified


class MdnsFinds:
    """The peers py-libp2p's mDNS finds, handed from zeroconf's threads to Trio.

    With ``enable_mDNS`` py-libp2p 0.8.1 browses from the moment the host is built (zeroconf
    threads); for each peer found it adds the advertised addresses to the peerstore and calls the
    process-wide ``peerDiscovery`` handlers in that thread. Nothing there dials (the auto-connector,
    which would dial every peerstore entry, is stopped), so the node reads ``receive``. Create this
    before building the host, so no find is missed, and ``close`` it when the host is closed.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._send, self.receive = trio.open_memory_channel[tuple[str, list[str]]](MDNS_BACKLOG)
        peerDiscovery.register_peer_discovered_handler(self._found)

    def _found(self, info: PeerInfo) -> None:  # in a zeroconf thread
        found = (info.peer_id.to_base58(), [str(a) for a in info.addrs])
        with contextlib.suppress(trio.RunFinishedError):  # the node has stopped
            self._token.run_sync_soon(self._offer, found)

    def _offer(self, found: tuple[str, list[str]]) -> None:  # in Trio's thread
        try:
            self._send.send_nowait(found)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.debug("mDNS: dropped a find of %s", found[0])

    def close(self) -> None:
        peerDiscovery.unregister_peer_discovered_handler(self._found)
        self._send.close()


async def dial_found(
    finds: MdnsFinds,
    connect: Callable[[str], Awaitable[str]],
    should_dial: Callable[[str], bool],
) -> None:
    """Dial each peer found by mDNS that ``should_dial`` accepts (listed, not connected, not us),
    at the addresses it advertised: routable ones first, unspecified ones (0.0.0.0) never."""
    async for peer_id, addrs in finds.receive:
        if not should_dial(peer_id):
            log.debug("mDNS found %s: not dialing it (not listed, connected, or this node)", peer_id)
            continue
        usable = [a for a in addrs if (ip := _ip_of(a)) is None or not ip.is_unspecified]
        usable.sort(key=lambda a: not reachable_from_elsewhere(a))
        if not usable:
            log.info("mDNS found %s, but it advertised no address to dial (%s): it should listen on an "
                     "interface address, not 0.0.0.0", peer_id, ", ".join(addrs))
        for addr in usable:
            try:
                await connect(f"{addr}/p2p/{peer_id}")
                log.info("connected to %s, found by mDNS at %s", peer_id, addr)
                break
            except (PeerError, ConfigError) as exc:
                log.info("mDNS found %s, but it is not reachable at %s: %s", peer_id, addr, exc)
