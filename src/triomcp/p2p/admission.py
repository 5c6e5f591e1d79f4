"""Inbound connections before authentication: a cap overall, a cap per source, one deadline.

Until Noise has authenticated a peer and the muxer is agreed, anyone who can reach the P2P port
costs the node a task, buffers and a socket. py-libp2p 0.8.1 limits none of that in practice:
its inbound limiter is raised to ten million slots by ``node.py`` (it keeps a slot per
connection until the host stops), and its resource manager let a thousand silent connections
from one address in (it refuses past 1,000 open connections of any kind, from anyone; its CIDR
rules cap each configured network as a whole, not each address in it, and count established
connections too). :class:`InboundGate` caps the connections in that phase, overall and per
source, and refuses the rest at once; a refused connection is closed before the node reads a
byte from it. The deadline on the phase is libp2p's own ``inbound_upgrade_timeout``, which
``node.py`` sets from ``p2p.handshake_timeout``: measured, it is one absolute deadline over
multistream-select, the Noise handshake and the muxer negotiation, so it also ends a peer that
sends nothing or trickles a byte a second (docs/security.md).

**The hook.** py-libp2p accepts a raw TCP connection in ``TCPListener.listen``'s ``handler``
(``libp2p/transport/tcp/tcp.py``, run by ``trio.serve_listeners``), wraps it in a
``TrioTCPStream`` and awaits the swarm's ``conn_handler`` -> ``Swarm._handle_inbound_connection``
-> ``_do_handle_inbound_connection``, which wraps it in a ``RawConnection`` and awaits
``Swarm.upgrade_inbound_raw_conn`` (security, then muxer), then waits for the host to stop. The
listener's handler is a closure that lives as long as the connection (until the host stops, in
0.8.1), so it cannot tell when authentication ended; ``upgrade_inbound_raw_conn`` is called once
for every accepted TCP connection, before any byte is read from the peer, is looked up on the
swarm instance, and returns exactly when the peer is authenticated and muxed (or raises when it
is not). :meth:`InboundGate.install` wraps that one bound method on this host's swarm: admit or
refuse by source, run the library's upgrade, release the slot when it returns or raises. A
refusal closes the raw connection and raises the library's ``SwarmException``, as libp2p's own
refusals there do; its caller closes and forgets the connection and frees its inbound slot.

Sources are IPv4 addresses, and IPv6 /64 networks (one host usually holds a whole /64).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.network.exceptions import SwarmException

__all__ = ["AdmissionStatistics", "InboundGate", "source_of"]

log = logging.getLogger("triomcp.p2p")

WARN_EVERY = 60.0
"""Seconds between warnings that connections are being refused (one per connection is at debug)."""

Upgrade = Callable[[Any, Any], Awaitable[Any]]


def source_of(address: tuple[str, int] | None) -> str:
    """The source an inbound connection is counted under: its IPv4 address, or its IPv6 /64."""
    if address is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address[0].split("%", 1)[0])
    except ValueError:
        return address[0]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class AdmissionStatistics:
    unauthenticated: int
    """Inbound connections now between accept and authentication."""
    refused: int
    """Inbound connections refused by a cap since the node started."""
    failed: int
    """Admitted connections whose upgrade failed or ran out of time."""


class InboundGate:
    """Counts inbound connections until they are authenticated; refuses those over a cap."""

    def __init__(self, *, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._per_source: Counter[str] = Counter()
        self._total = 0
        self._refused = 0
        self._failed = 0
        self._refused_since_warning = 0
        self._last_warning: float | None = None

    # -- the counting (synchronous: no checkpoint between the check and the count) ---------
    def try_admit(self, source: str) -> bool:
        if self._total >= self.max_total or self._per_source[source] >= self.max_per_source:
            self._refused += 1
            self._refused_since_warning += 1
            return False
        self._total += 1
        self._per_source[source] += 1
        return True

    def release(self, source: str) -> None:
        self._total -= 1
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(self._total, self._refused, self._failed)

    def _report_refusal(self, source: str) -> None:
        which = "overall" if self._total >= self.max_total else f"from {source}"
        log.debug("refused an unauthenticated inbound connection from %s (cap %s reached)", source, which)
        now = trio.current_time()
        if self._last_warning is None or now - self._last_warning >= WARN_EVERY:
            log.warning("refusing unauthenticated inbound connections: %d refused since the last warning "
                        "(caps: p2p.max_unauthenticated_inbound=%d, p2p.max_unauthenticated_per_source=%d; "
                        "latest from %s)", self._refused_since_warning, self.max_total, self.max_per_source,
                        source)
            self._last_warning = now
            self._refused_since_warning = 0

    # -- the hook ---------------------------------------------------------------------------
    def install(self, swarm: Any) -> None:
        """Wrap ``swarm.upgrade_inbound_raw_conn`` (this swarm instance only; idempotent)."""
        upgrade: Upgrade = swarm.upgrade_inbound_raw_conn
        if getattr(upgrade, "triomcp_gate", None) is self:
            return

        async def gated_upgrade(raw_conn: Any, maddr: Any) -> Any:
            return await self._upgrade(upgrade, raw_conn, maddr)

        gated_upgrade.triomcp_gate = self  # type: ignore[attr-defined]
        swarm.upgrade_inbound_raw_conn = gated_upgrade

    async def _upgrade(self, upgrade: Upgrade, raw_conn: Any, maddr: Any) -> Any:
        try:
            source = source_of(raw_conn.get_remote_address())
        except Exception:
            source = "unknown"
        if not self.try_admit(source):
            self._report_refusal(source)
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await raw_conn.close()
            raise SwarmException(f"unauthenticated inbound connections capped: refused {source}")
        try:
            return await upgrade(raw_conn, maddr)
        except Exception:
            self._failed += 1
            raise
        finally:
            self.release(source)
