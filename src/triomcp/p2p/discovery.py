"""Finding and keeping peers — one code path for the server and the CLI.

Sources, in order: explicit multiaddrs, the bootstrap list (kept connected by
:func:`keep_connected`, the one reconnect loop, with exponential backoff and full jitter),
the peers remembered from earlier runs, the announce file of a node on the same machine, and
mDNS (opt-in; it starts zeroconf threads and multicasts, so it is off by default).

Keeping: which connections to close when there are too many is :func:`pick_trims` (no I/O; the
node's trimmer carries it out).

Addresses: a node listening on a wildcard address (``/ip4/0.0.0.0/...``, ``/ip6/::/...``) tells
its peers (peer exchange, identify, the announce file) this machine's interface addresses at that
port instead (:func:`announce_addrs`): on Linux, dialing 0.0.0.0 reaches the dialer's own machine,
often its own listener. And a node never dials itself (:func:`reaches_self`).

py-libp2p's mDNS only fills the peerstore and fires a process-wide event, from a
zeroconf thread; ``MdnsFinds`` hands those finds to Trio and ``dial_found`` dials
the ones this node lists in ``authorized_peers``.

Size: a little over 300 lines: every way a node finds and keeps peers (explicit, bootstrap,
remembered, announce file, mDNS) and which addresses it tells them, each a short function.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr as ma
import psutil
import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

from triomcp._retry import Backoff
from triomcp.errors import ConfigError, PeerError

__all__ = ["ANNOUNCE_FILE", "MdnsFinds", "PeerUse", "announce_addrs", "dial_found", "interface_ips", "is_unspecified",
           "keep_bootstrap_connected", "keep_connected", "peer_id_in", "pick_trims", "reachable_from_elsewhere", "reaches_self",
           "read_announce", "write_announce"]

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


def write_announce(data_dir: Path, peer_id: str, addrs: list[str], reachability: str | None = None) -> Path:
    """Atomically record this node's real listen multiaddrs (and its reachability, ``reachability.py``)
    for local tools and peers."""
    path = data_dir / ANNOUNCE_FILE
    tmp = path.with_suffix(".tmp")
    record: dict[str, Any] = {"peer_id": peer_id, "multiaddrs": addrs, "pid": os.getpid()}
    if reachability is not None:
        record["reachability"] = reachability
    tmp.write_text(json.dumps(record, indent=2) + "\n")
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
    pause: Callable[[str], tuple[float, str] | None] | None = None,
    needed: Callable[[], bool] | None = None,
    logger: logging.Logger = log,
) -> None:
    """Dial ``await target()`` (a multiaddr) until connected; redial when the connection drops
    (woken by the node's connection events, not by polling), with :class:`~triomcp._retry.Backoff`
    between failures. ``transient`` errors (from ``target`` or ``connect``) are retried; others end
    the loop. ``peer_id``: whom ``target`` names, if known before the first dial (else the id
    ``connect`` returns). ``what`` names the peer in the logs. ``pause(peer_id)``: ``(seconds, why)``
    to wait before redialing a peer that said why it went (it is leaving, or trimmed its
    connections), or None to redial at once. ``needed()``: False while the peer need not be
    redialed (a bootstrap peer, once the node has enough others). The one reconnect loop: bootstrap peers
    (:func:`keep_bootstrap_connected`) and the local node of ``p2p.mode = "local-node"``."""
    backoff = backoff or Backoff(base=1.0, cap=60.0)
    failures = 0
    while True:
        if (peer_id is None or not is_connected(peer_id)) and (needed is None or needed()):
            held = pause(peer_id) if pause is not None and peer_id is not None else None
            if held is not None and peer_id is not None:
                delay, why = held
                logger.info("%s %s %s; redialing in %.1fs", what, peer_id, why, delay)
                with trio.move_on_after(delay):
                    while not is_connected(peer_id):
                        await wait_changed()
                continue
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
    *,
    pause: Callable[[str], tuple[float, str] | None] | None = None,
    needed: Callable[[], bool] | None = None,
) -> None:
    """Keep one bootstrap peer connected: full jitter up to 1, 2, 4 ... 60 s between failed dials,
    and ``pause`` (see :func:`keep_connected`) before redialing one that said it is leaving. With
    ``needed`` (the node's ``wants_peers``), it is redialed only while the node has too few peers:
    a node that has joined the mesh does not keep coming back to the bootstrap peer that trimmed it."""
    async def target() -> str:
        return multiaddr

    await keep_connected(target, connect, is_connected, wait_changed, what="bootstrap peer",
                         peer_id=peer_id_in(multiaddr), pause=pause, needed=needed)


@dataclass(frozen=True)
class PeerUse:
    """What the trimmer knows of one connected peer."""

    peer_id: str
    connected_at: float
    last_used: float
    """When a request to or from it last started or ended (its connection time if none)."""
    listed: bool
    spared: bool
    """A bootstrap peer, protected, or with requests in flight: never trimmed."""


def pick_trims(peers: Sequence[PeerUse], *, now: float, low: int, high: int,
               grace: float) -> tuple[list[str], float | None]:
    """The peers to disconnect when more than ``high`` are connected: down to ``low``, never a spared
    one or one connected less than ``grace`` ago; unlisted ones first, then the least recently used.
    Also when to look again (a connection leaving its grace period could be trimmed then), or None.

    Connections still in their grace period do not count toward ``high``: a peer that connects for
    a moment (a visit of the peer exchange, a client's one call) would otherwise take a node at its
    bound down to ``low``, its trimmed peers would dial others to get back to theirs, and those
    would trim in turn (measured: visits every 30 s tripled a 32-node mesh's idle CPU that way)."""
    if len(peers) <= high:
        return [], None
    candidates = [p for p in peers if not p.spared]
    young = [p.connected_at + grace for p in candidates if now - p.connected_at < grace]
    if len(peers) - len(young) <= high:
        return [], min(young)  # above high only with the young ones: judged once they are settled
    need = len(peers) - low
    ready = sorted((p for p in candidates if now - p.connected_at >= grace), key=lambda p: (p.listed, p.last_used))
    trims = [p.peer_id for p in ready[:need]]
    return trims, (min(young) if young and len(trims) < need else None)



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


def is_unspecified(multiaddr: str) -> bool:
    """An address on 0.0.0.0 or ``::``: never one to dial (on Linux it reaches the dialer's own machine)."""
    ip = _ip_of(multiaddr)
    return ip is not None and ip.is_unspecified


def _interfaces() -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, bool]]:
    """Every IP address of this machine's interfaces (psutil), with whether its interface is up."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        up = stats[name].isup if name in stats else True
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    out.append((ipaddress.ip_address(addr.address.split("%", 1)[0]), up))
                except ValueError:
                    continue
    return out


def interface_ips(version: int) -> list[str]:
    """This machine's IPv4 (``version`` 4) or IPv6 addresses to tell peers, in interface order: those
    of interfaces that are up, loopback only when there is no other; never link-local ones (an
    IPv6 one needs a zone that a multiaddr cannot carry)."""
    found: list[str] = []
    loopback: list[str] = []
    for ip, up in _interfaces():
        if ip.version != version or not up or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        (loopback if ip.is_loopback else found).append(str(ip))
    return list(dict.fromkeys(found or loopback))


def announce_addrs(addrs: Sequence[ma.Multiaddr]) -> list[ma.Multiaddr]:
    """What a host tells its peers (libp2p's ``addrs_factory``, so identify says the same): its
    addresses, with each wildcard one (``0.0.0.0``, ``::``) replaced by :func:`interface_ips` at
    that port, in order, without duplicates; never a wildcard address."""
    out: list[str] = []
    for addr in addrs:
        text = str(addr)
        ip = _ip_of(text)
        if ip is None or not ip.is_unspecified:
            out.append(text)
            continue
        parts = text.split("/")  # ["", "ip4", "0.0.0.0", "tcp", "4001", ...]
        for host in interface_ips(ip.version):
            parts[2] = host
            out.append("/".join(parts))
    return [ma.Multiaddr(a) for a in dict.fromkeys(out)]


def _ip_port(multiaddr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str] | None:
    parts = multiaddr.split("/")
    ip = _ip_of(multiaddr)
    if ip is None or len(parts) < 5 or parts[3] != "tcp":
        return None
    return ip, parts[4]


def reaches_self(multiaddr: str, own_peer_id: str, bound: Sequence[str]) -> bool:
    """Would dialing ``multiaddr`` reach this node: its ``/p2p/`` id is this node's, it is a wildcard
    address, or it names the IP and port of one of this node's listeners (``bound``: the addresses
    it listens on; a wildcard one stands for every address of this machine at its port)."""
    if multiaddr.rpartition("/p2p/")[2] == own_peer_id or is_unspecified(multiaddr):
        return True
    target = _ip_port(multiaddr)
    if target is None:
        return False
    ip, port = target
    mine = [b for b in (_ip_port(str(a)) for a in bound) if b is not None and b[1] == port]
    if any(b_ip == ip for b_ip, _ in mine):
        return True
    if any(b_ip.is_unspecified and b_ip.version == ip.version for b_ip, _ in mine):
        return ip.is_loopback or ip in {local for local, _ in _interfaces()}
    return False


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
