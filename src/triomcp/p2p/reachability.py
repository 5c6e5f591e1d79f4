"""Is this node publicly reachable? Trusted peers dial it back (``/triomcp/dialback/1.0.0``).

py-libp2p 0.8.1 ships AutoNAT (``libp2p.host.autonat``: a service that answers dial requests, a
client with ``check_reachability``/``get_status``). Its service has no hook for our authorization
rule (it answers any peer), and it dials with the swarm, adding a second connection to a peer we
keep at one; it was read, not tried against our nodes. This is the same idea, small, over the
peers this node already trusts:

- **asking** (:meth:`Reachability.check`): up to ``ASK_AT_ONCE`` connected, listed peers that
  serve the protocol, over *direct* connections only (a relay would be the one observed), are
  sent ``{"ports": [...]}``: the TCP ports of this node's listen addresses;
- **answering** (:meth:`Reachability.serve`): only for an authorized peer, on a direct
  connection, within its rate limit (one per ``ANSWER_EVERY`` seconds per peer, a burst of 2)
  and ``MAX_DIALBACKS`` at once. The answerer dials the *IP it observes the asker at* (never an
  address the asker names: it cannot be made to dial a third party) on each port (at most
  ``MAX_PORTS``), within ``p2p.reachability.dialback_timeout``: a TCP connection that answers
  libp2p's multistream-select header counts as reachable. The answer is
  ``{"reachable": [<addr>...], "tried": n}`` or ``{"error": ...}``;
- **verdict** (:func:`verdict`, sans-I/O): ``public`` when any peer reached this node,
  ``private`` when peers answered and none did, ``unknown`` while nobody has answered.

A node with relays announces its relayed address unless it is ``public`` (``Node.announced_addrs``).
What the dial-back proves: something speaking libp2p listens at the observed IP and port, not
that it is this node's key (an operator forwarding the port to another libp2p node would be
counted reachable); the verdict is advice for what to announce, never for authorization.

Size: a little over 300 lines: one concept (a node's reachability), its two sides (asker and
answerer), the sans-I/O verdict and the bounds on what a request may make a node do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import multiaddr as ma
import trio

from triomcp._ratelimit import TokenBucket
from triomcp.errors import PeerError
from triomcp.p2p._errors import close_quietly, map_libp2p_errors
from triomcp.p2p.circuit import is_circuit
from triomcp.p2p.framing import encode_frame

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from triomcp.p2p.node import Node

__all__ = ["DIALBACK_PROTOCOL", "PRIVATE", "PUBLIC", "UNKNOWN", "Reachability", "ReachabilityStatistics", "verdict"]

log = logging.getLogger("triomcp.p2p")

DIALBACK_PROTOCOL = "/triomcp/dialback/1.0.0"
UNKNOWN, PUBLIC, PRIVATE = "unknown", "public", "private"
STATES = (UNKNOWN, PUBLIC, PRIVATE)
MAX_FRAME = 4096
"""Bytes a request or answer may take; more is refused."""
MAX_PORTS = 4
"""Ports one request may name; more are refused."""
MAX_DIALBACKS = 4
"""Dial-backs this node runs at once for all askers; more are answered ``busy``."""
ANSWER_EVERY = 10.0
"""Seconds between two answered requests of one peer, on average (a burst of 2)."""
ASK_AT_ONCE = 3
"""Peers asked in one check."""
MULTISTREAM = b"\x13/multistream/1.0.0\n"
"""libp2p's first message (varint length, protocol id): what a libp2p listener answers with."""


def verdict(answers: list[bool | None]) -> str:
    """The state from one check's answers: True reached us, False did not, None gave no answer."""
    if any(a is True for a in answers):
        return PUBLIC
    if any(a is False for a in answers):
        return PRIVATE
    return UNKNOWN


def _tcp_ports(addrs: list[str]) -> list[int]:
    ports: list[int] = []
    for addr in addrs:
        if is_circuit(addr):
            continue
        try:
            port = int(ma.Multiaddr(addr).value_for_protocol("tcp"))
        except Exception:
            continue
        if port not in ports:
            ports.append(port)
    return ports[:MAX_PORTS]


def _is_relayed(stream: INetStream) -> bool:
    """Does the stream run over a relayed connection (or can it not be told: then yes)?"""
    try:
        addrs = stream.muxed_conn.get_transport_addresses()
    except Exception:
        return True
    return not addrs or any(is_circuit(str(a)) for a in addrs)


async def dial_back(ip: str, port: int) -> bool:
    """Does a libp2p listener answer at ``ip:port``? (The caller owns the deadline.)"""
    try:
        stream = await trio.open_tcp_stream(ip, port)
    except OSError:
        return False
    async with stream:
        try:
            await stream.send_all(MULTISTREAM)
            got = b""
            while len(got) < len(MULTISTREAM):
                chunk = await stream.receive_some(len(MULTISTREAM) - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == MULTISTREAM
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False


@dataclass(frozen=True)
class ReachabilityStatistics:
    state: str
    """``unknown``, ``public`` or ``private``."""
    checked_ago: float | None
    """Seconds since the last check that got an answer."""
    reachable_at: list[str]
    """The addresses at which peers reached this node in that check."""
    checks: int
    answered: int
    """Dial-backs this node ran for peers since start."""
    refused: int
    """Requests refused: not authorized, relayed, over the rate limit, busy or malformed."""


@dataclass
class _Counters:
    checks: int = 0
    answered: int = 0
    refused: int = 0
    budgets: dict[str, TokenBucket] = field(default_factory=dict)


class Reachability:
    """One node's reachability: its checks (asker) and its dial-backs for peers (answerer)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.state = UNKNOWN
        self._checked_at: float | None = None
        self._reachable_at: list[str] = []
        self._counters = _Counters()
        self._dialing = 0
        self._changed = trio.Event()

    # -- answering -------------------------------------------------------------------------
    def _refuse(self, peer: str, why: str) -> dict[str, Any]:
        self._counters.refused += 1
        log.debug("dial-back for %s refused: %s", peer[:16], why)
        return {"error": why}

    def _admit(self, peer: str, relayed: bool) -> str | None:
        """Why the request is refused, or None."""
        if not self._node.authorized.is_authorized(peer):
            return "not authorized"
        if relayed:
            return "relayed connection: the asker's address cannot be observed"
        budget = self._counters.budgets.get(peer)
        if budget is None:
            budget = self._counters.budgets[peer] = TokenBucket(1 / ANSWER_EVERY, 2)
        if not budget.take():
            return "rate limited"
        if self._dialing >= MAX_DIALBACKS:
            return "busy"
        return None

    async def serve(self, stream: INetStream) -> None:
        """One request; nothing escapes into the host."""
        from triomcp.p2p.exchange import read_one_frame

        peer = "?"
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            why = self._admit(peer, _is_relayed(stream))
            if why is not None:
                answer = self._refuse(peer, why)
            else:
                with trio.fail_after(self._node.settings.stream_timeout):
                    request = await read_one_frame(stream, MAX_FRAME)
                answer = await self._answer(peer, stream, request)
            with trio.move_on_after(self._node.settings.stream_timeout):
                await stream.write(encode_frame(answer))
        except Exception as exc:
            log.debug("dial-back request from %s failed: %r", peer[:16], exc)
        finally:
            await close_quietly(stream)

    async def _answer(self, peer: str, stream: INetStream, request: dict[str, Any]) -> dict[str, Any]:
        ports = request.get("ports")
        if (not isinstance(ports, list) or not ports or len(ports) > MAX_PORTS
                or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)):
            return self._refuse(peer, f"ports must be 1 to {MAX_PORTS} TCP ports")
        try:
            ip = str(stream.get_remote_address()[0])  # type: ignore[index]
        except Exception:
            return self._refuse(peer, "the asker's address is not known")
        family = "ip6" if ":" in ip else "ip4"
        self._dialing += 1
        self._counters.answered += 1
        try:
            reached: list[str] = []

            async def one(port: int) -> None:
                with trio.move_on_after(self._node.settings.reachability.dialback_timeout):
                    if await dial_back(ip, port):
                        reached.append(f"/{family}/{ip}/tcp/{port}")

            async with trio.open_nursery() as nursery:
                for port in ports:
                    nursery.start_soon(one, port)
        finally:
            self._dialing -= 1
        return {"reachable": sorted(reached), "tried": len(ports)}

    # -- asking ----------------------------------------------------------------------------
    def _askable(self) -> list[str]:
        node = self._node
        out = []
        for peer in node.connected_peers():
            if not node.authorized.is_listed(peer) or node.supports(peer, DIALBACK_PROTOCOL) is False:
                continue
            if any(c["kind"] == "direct" for c in node.connections_to(peer)):
                out.append(peer)
        return out[:ASK_AT_ONCE]

    async def _ask(self, peer: str, ports: list[int]) -> list[str] | None:
        """The addresses at which ``peer`` reached this node; None if it gave no answer."""
        from triomcp.p2p.exchange import read_one_frame

        node = self._node
        try:
            stream = await node._open_stream(peer, DIALBACK_PROTOCOL, dial=False)
        except PeerError as exc:
            log.debug("could not ask %s for a dial-back: %s", peer[:16], exc)
            return None
        try:
            deadline = node.settings.stream_timeout * 2 + node.settings.reachability.dialback_timeout
            with map_libp2p_errors(f"asking {peer} for a dial-back"), trio.fail_after(deadline):
                await stream.write(encode_frame({"ports": ports}))
                answer = await read_one_frame(stream, MAX_FRAME)
        except (PeerError, trio.TooSlowError) as exc:
            log.debug("no dial-back answer from %s: %s", peer[:16], exc)
            return None
        finally:
            await close_quietly(stream)
        reachable = answer.get("reachable")
        if not isinstance(reachable, list) or not all(isinstance(a, str) for a in reachable):
            log.debug("dial-back refused by %s: %s", peer[:16], str(answer.get("error"))[:200])
            return None
        return reachable[:MAX_PORTS]

    async def check(self) -> str:
        """Ask the trusted peers now; the state afterwards (unchanged if nobody answered)."""
        ports = _tcp_ports(self._node.listen_addrs())
        peers = self._askable()
        if not ports or not peers:
            return self.state
        self._counters.checks += 1
        results: dict[str, list[str] | None] = {}

        async def one(peer: str) -> None:
            results[peer] = await self._ask(peer, ports)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        answers = [None if r is None else bool(r) for r in results.values()]
        new = verdict(answers)
        if new != UNKNOWN:
            self._checked_at = trio.current_time()
            self._reachable_at = sorted({a for r in results.values() if r for a in r})
            if new != self.state:
                log.info("reachability: %s (%s)", new, ", ".join(self._reachable_at) or "no peer reached it")
                self.state = new
                self._changed.set()
                self._changed = trio.Event()
                node = self._node
                if node.reservations is not None:  # the relayed address is announced or no longer
                    node.reservations.addresses_changed()
                if node.in_mesh:  # `triomcp id` shows it
                    from triomcp.p2p.discovery import write_announce

                    await trio.to_thread.run_sync(write_announce, node.data_dir, node.peer_id, node.listen_addrs(),
                                                  new)
        return self.state

    def next_change(self) -> trio.Event:
        return self._changed

    async def run(self) -> None:
        """Check whenever a trusted peer is there to ask: at once, then every
        ``p2p.reachability.interval`` seconds (sooner, on the next peer, while nobody answered)."""
        node = self._node
        while True:
            changed = node.next_peers_change()
            await self.check()
            if self._checked_at is not None:
                await trio.sleep(node.settings.reachability.interval)
            else:
                with trio.move_on_after(node.settings.reachability.interval):
                    await changed.wait()

    def statistics(self) -> ReachabilityStatistics:
        ago = None if self._checked_at is None else round(trio.current_time() - self._checked_at, 1)
        return ReachabilityStatistics(self.state, ago, list(self._reachable_at), self._counters.checks,
                                      self._counters.answered, self._counters.refused)
