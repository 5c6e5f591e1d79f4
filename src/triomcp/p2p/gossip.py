"""Work announcements to the whole mesh over libp2p GossipSub: JSON objects on one topic, signed by
their origin, delivered only from authorized origins.

:func:`start_gossip` mounts py-libp2p's own ``Pubsub`` and ``GossipSub`` on a running host, in the
caller's nursery; :class:`Gossip` publishes and hands the validated messages to the app. What it
adds to the library, each learned by reading py-libp2p 0.8.1 and measuring it (the figures are in
``bench/gossip.py`` and ``tests/p2p/test_gossip.py``):

- **authorized peers only, both ways.** An inbound gossip stream from a peer this node does not
  authorize is reset before pubsub reads a byte (``stream_handler``); no outbound stream is opened to
  one (``is_peer_blacklisted``), so it is never in the mesh and gets no message. A message is
  accepted only if the peer that forwarded it and its origin (``from``) are authorized, checked on
  each message, so a revocation stops acceptance at once (admission to the mesh is decided per
  connection). The origin's signature is verified (strict signing) and counted when bad.
- **content rules** (:func:`decode_message`, the topic validator): at most ``max_message_bytes``,
  UTF-8 JSON, an object. Verdicts are a function of the message alone, because pubsub caches them
  by message id.
- **no probe of a peer that does not speak gossipsub**: stock pubsub opens a stream to every
  connected peer, and to a client-only peer (a CLI) that logs one ERROR per connection
  (``Failed to open stream``). Here a stream is opened only once identify lists a gossipsub
  protocol, or when the peer opened one to us. Peers connected before gossip started (pubsub's
  notifee never saw them) get an identify push, since what they learned at connection predates our
  gossip, and are registered at start.
- **no exception escapes**: a failing pubsub task stops the whole pubsub service (its manager
  logs ERROR and cancels), so inbound message handling and stream handlers swallow and count.
- **library heuristics off** (``_router``): adaptive gossip (raised the 1 s heartbeat to 30-60 s
  in a mesh smaller than the degree), eclipse protection (IP-diversity grafts; meaningless among
  authorized peers), and the per-forwarder rate limit (10 messages/s per peer and topic by
  default, counted on the forwarder, so it caps the whole mesh's traffic over one link, and a
  WARNING per message dropped). Authorized peers are trusted not to flood; origins coalesce.
- message sequence numbers start at the clock in nanoseconds (go-libp2p's choice), not in seconds:
  a restarted node would otherwise reuse the message ids (origin + seqno) of its last session's
  messages, and peers would drop its new ones as seen (120 s cache) or as equivocation (WARNING).

Lifecycle: call :func:`start_gossip` once the host listens, best before it connects to anyone;
call :meth:`Gossip.aclose` before the host is closed. Tested with py-libp2p 0.8.1; the
overridden pubsub methods (``_handle_new_peer`` and ``_handle_dead_peer`` are private) are pinned by
the tests.

Size: about 500 lines, a fifth of them docstrings: one concept (the work topic's transport). The
content rules are its sans-I/O part and would move to a module of their own if they grew.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.tools.anyio_service import background_trio_service

from triomcp.p2p._errors import close_quietly

__all__ = ["MAX_MESSAGE_BYTES", "RECEIVE_BUFFER", "WORK_TOPIC", "Gossip", "GossipStatistics", "decode_message",
           "encode_message", "start_gossip"]

log = logging.getLogger("triomcp.p2p")

WORK_TOPIC = "/triomcp/work/1"
MAX_MESSAGE_BYTES = 16 * 1024
RECEIVE_BUFFER = 256
"""Messages held for :meth:`Gossip.messages` receivers; when full the oldest is dropped (counted)."""

GOSSIP_PROTOCOLS = (PROTOCOL_ID_V11,)
"""GossipSub v1.1 only: v1.2 adds an IDONTWANT to every mesh peer for every message (our own
included), each RPC with a signed peer record: more traffic than it saves for messages this small."""

_UNAUTHORIZED_ORIGIN = "unauthorized origin"

_IDENTIFY_WAITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0)
"""Checks of the peerstore for the peer's identified protocols after it connects: 12, over ~5 s."""


@dataclass(frozen=True)
class GossipStatistics:
    published: int
    """Messages this node published."""
    delivered: int
    """Messages from other origins handed to :meth:`Gossip.messages` (dropped ones included)."""
    rejected: int
    """Messages refused: unauthorized origin, oversized or not a JSON object (once per message:
    pubsub keeps the verdict); a bad signature or an unauthorized forwarder (each copy: the same
    message may come genuine from another peer)."""
    dropped: int = 0
    """Delivered messages pushed out of the full receive buffer, oldest first."""
    publish_failures: int = 0
    """Publishes that did not go out (pubsub failed, or after :meth:`Gossip.aclose`)."""
    refused_streams: int = 0
    """Inbound gossip streams reset because their peer is not authorized."""
    rpcs_sent: int = 0
    """Pubsub RPCs written to peers (messages and control; not the one hello per peer)."""
    bytes_sent: int = 0
    """Their protobuf bytes (without the length prefixes)."""
    copies_sent: int = 0
    """Messages written to peers, published and forwarded (an RPC may carry several)."""


# -- the content rules, sans I/O -------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode_message(message: dict[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Compact UTF-8 JSON of ``message``; ValueError if it is not a JSON object or is too big."""
    if not isinstance(message, dict):
        raise ValueError(f"a gossip message is a JSON object, not {type(message).__name__}")
    try:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"a gossip message must be JSON: {exc}") from None
    if len(data) > max_bytes:
        raise ValueError(f"gossip message of {len(data)} bytes is over the {max_bytes}-byte limit")
    return data


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The object in a received message; ValueError (with the reason) for anything else."""
    if len(data) > max_bytes:
        raise ValueError(f"over {max_bytes} bytes")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
        raise ValueError("not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value


# -- py-libp2p's pubsub, admitting authorized peers only ---------------------------------------------

class _Events(Protocol):
    """What :class:`_Pubsub` reports to its :class:`Gossip`."""

    def _on_deliver(self, origin: str, message: dict[str, Any]) -> None: ...
    def _on_rejected(self, peer: ID, origin: ID, reason: str) -> None: ...
    def _on_refused(self, peer: ID) -> None: ...
    def _on_sent(self, rpc: rpc_pb2.RPC) -> None: ...


class _Inbox:
    """The bounded buffer between pubsub and the app: never blocks, drops the oldest when full
    (a newer announcement supersedes an older one)."""

    def __init__(self, size: int = RECEIVE_BUFFER) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[str, dict[str, Any]]](size)
        self.delivered = 0
        self.dropped = 0

    def put(self, origin: str, message: dict[str, Any]) -> None:
        self.delivered += 1
        try:
            self._send.send_nowait((origin, message))
        except trio.WouldBlock:
            with suppress(trio.WouldBlock):
                self._receive.receive_nowait()
            self.dropped += 1
            with suppress(trio.WouldBlock):
                self._send.send_nowait((origin, message))
        except trio.ClosedResourceError:
            pass

    def receiver(self) -> trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]]:
        return self._receive.clone()

    def close(self) -> None:
        self._send.close()


def _router() -> GossipSub:
    """libp2p's default degrees (D 6, D_lo 4, D_hi 12) and a 1 s heartbeat (py-libp2p's default is
    120 s); the library's own heuristics off (module docstring)."""
    return GossipSub(list(GOSSIP_PROTOCOLS), degree=6, degree_low=4, degree_high=12,
                     heartbeat_interval=1, heartbeat_initial_delay=0.1, do_px=False,
                     adaptive_gossip_enabled=False, eclipse_protection_enabled=False,
                     spam_protection_enabled=False)


class _Pubsub(Pubsub):
    """``Pubsub`` with the admission rules; each override says which library path it guards."""

    def __init__(self, host: IHost, router: GossipSub, *, topic: str, max_message_bytes: int,
                 is_authorized: Callable[[str], bool], events: _Events) -> None:
        super().__init__(host, router, strict_signing=True, allowed_topics={topic})
        self.counter = time.time_ns()  # module docstring: seqnos unique across restarts
        self._topic = topic
        self._max_message_bytes = max_message_bytes
        self._is_authorized = is_authorized
        self._events = events
        self.accepting = False
        """Set once the services run (:meth:`start_accepting`), cleared for good by :meth:`refuse`."""
        self._decided = trio.Event()
        """Set by the first of those: a stream that comes before waits for it."""
        self._inbound: set[trio.CancelScope] = set()
        self._inbound_changed = trio.Event()
        self._gossiping: Counter[ID] = Counter()
        """Peers with a live inbound gossip stream: they speak gossipsub, whatever identify said."""
        self._registering: set[ID] = set()
        self.earlier: set[ID] = set()
        """Peers connected before gossip started (see :meth:`_speaks_gossip`)."""
        self._authz_failing = False
        self.set_topic_validator(topic, self._validate, False)

    def authorized(self, peer_id: ID) -> bool:
        try:
            allowed = self._is_authorized(peer_id.to_base58())
        except Exception as exc:  # e.g. a malformed authorized_peers file: refuse, say so once
            if not self._authz_failing:
                log.warning("gossip: authorization check failed, refusing gossip until it works: %s", exc)
            self._authz_failing = True
            return False
        self._authz_failing = False
        return allowed

    # Outbound streams (every connection's notifee, reconnects, ensure_peer_stream): none to a peer
    # we do not authorize. Inbound messages check it too, but count first (push_msg).
    def is_peer_blacklisted(self, peer_id: ID) -> bool:
        return super().is_peer_blacklisted(peer_id) or (peer_id != self.my_id and not self.authorized(peer_id))

    async def _handle_new_peer(self, peer_id: ID) -> None:
        """Open our stream to a peer only if it speaks gossipsub (stock pubsub tries any peer)."""
        if peer_id in self.peers or peer_id in self._registering or self.is_peer_blacklisted(peer_id):
            return
        self._registering.add(peer_id)
        try:
            if not await self._speaks_gossip(peer_id):
                log.debug("gossip: %s does not speak gossipsub; no stream to it", peer_id)
                return
            await super()._handle_new_peer(peer_id)
        finally:
            self._registering.discard(peer_id)

    async def _speaks_gossip(self, peer_id: ID) -> bool:
        """Whether identify lists one of our protocols for the peer (a bounded wait for identify).
        For a peer connected before gossip started (:attr:`earlier`), what identify said then may
        predate its gossip: wait for a push of its newer list rather than take a no."""
        wanted = set(self.protocols)
        patient = peer_id in self.earlier
        try:
            for delay in _IDENTIFY_WAITS:
                if self._gossiping[peer_id]:
                    return True
                try:
                    known = set(self.host.get_peerstore().get_protocols(peer_id))
                except Exception:  # PeerStoreError: not identified yet
                    known = set()
                if known & wanted:
                    return True
                if (known and not patient) or peer_id not in self.host.get_connected_peers():
                    return False
                await trio.sleep(delay)
            return bool(self._gossiping[peer_id])
        finally:
            self.earlier.discard(peer_id)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        """Our stream to the peer died (a write failed, or :meth:`Gossip.reopen`): pubsub opens it
        again while the peer is still connected, but would also forget the topics the peer
        subscribed to. Those it said on its own stream, which may live on (or be new already: its
        hello came first) and says them once: kept while the peer is connected, as it unsubscribed
        from nothing. (Measured in ``tests/p2p/test_direct.py``: lost, the peer got no more
        announcements.) Once the peer is gone pubsub forgets them, as before."""
        topics = ([topic for topic, peers in self.peer_topics.items() if peer_id in peers]
                  if self._peer_is_connected(peer_id) else [])
        super()._handle_dead_peer(peer_id)
        for topic in topics:
            self.handle_subscription(peer_id, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic))

    # Inbound streams: registered by Pubsub.__init__ for each protocol (self.stream_handler).
    async def stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        if not self._decided.is_set():  # a stream in the moment between mounting and running
            with trio.move_on_after(5):
                await self._decided.wait()
        if not self.accepting:
            await close_quietly(stream, reset=True)
            return
        if not self.authorized(peer_id):
            self._events._on_refused(peer_id)
            await close_quietly(stream, reset=True)
            return
        self._gossiping[peer_id] += 1
        scope = trio.CancelScope()
        self._inbound.add(scope)
        try:
            if peer_id not in self.peers and peer_id not in self._registering:
                self.manager.run_task(self.ensure_peer_stream, peer_id)  # it speaks gossipsub: answer it
            with scope:
                await super().stream_handler(stream)
        except Exception as exc:  # e.g. a protobuf DecodeError: pubsub catches only its own errors
            log.debug("gossip: stream from %s failed: %r", peer_id, exc)
            await close_quietly(stream, reset=True)
        finally:
            self._inbound.discard(scope)
            self._inbound_changed.set()
            self._gossiping[peer_id] -= 1
            if self._gossiping[peer_id] <= 0:
                del self._gossiping[peer_id]
            if not self.accepting:
                await close_quietly(stream, reset=True)

    def start_accepting(self) -> None:
        if not self._decided.is_set():
            self.accepting = True
            self._decided.set()

    def refuse(self) -> None:
        """Refuse new gossip streams and end the inbound ones (their handlers run in the host's tasks)."""
        self.accepting = False
        self._decided.set()
        for scope in list(self._inbound):
            scope.cancel()

    async def wait_inbound_ended(self) -> None:
        while self._inbound:
            self._inbound_changed = trio.Event()
            await self._inbound_changed.wait()

    # Inbound messages, each run as a pubsub task: an exception there stops the whole service.
    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:  # our own publish: Gossip.publish handles its errors
            await super().push_msg(msg_forwarder, msg)
            return
        try:
            reason = self._screen(msg_forwarder, msg)
            if reason is not None:
                if reason == _UNAUTHORIZED_ORIGIN:  # nothing from it will pass: its other copies, unread
                    self.seen_messages.add(self.get_message_id(msg))
                self._events._on_rejected(msg_forwarder, ID(msg.from_id), reason)
                return
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            log.debug("gossip: message from %s dropped: %r", msg_forwarder, exc)

    def _screen(self, forwarder: ID, msg: rpc_pb2.Message) -> str | None:
        """Who sent it, before pubsub spends anything on it; None: let pubsub go on."""
        if self.seen_messages.has(self.get_message_id(msg)):
            return None  # a copy of one seen already: pubsub drops it
        if not self.authorized(forwarder):
            return "forwarded by an unauthorized peer"
        origin = ID(msg.from_id)
        if origin != self.my_id and not self.authorized(origin):
            return _UNAUTHORIZED_ORIGIN
        try:
            signed = signature_validator(msg)
        except Exception:  # it raises on an undecodable key
            signed = False
        return None if signed else "bad signature"  # pubsub verifies again: it would drop it uncounted

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The topic validator: the content rules (a function of the message: pubsub caches it)."""
        try:
            decode_message(msg.data, self._max_message_bytes)
        except ValueError as exc:
            self._events._on_rejected(forwarder, ID(msg.from_id), str(exc))
            return False
        return True

    # Accepted messages: pubsub's own subscription queue holds 32 and logs a WARNING per message
    # when full; this hands them to the app's bounded buffer instead.
    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        origin = ID(publish_message.from_id)
        if self._topic not in publish_message.topicIDs or origin == self.my_id:
            return
        try:
            message = decode_message(publish_message.data, self._max_message_bytes)
        except ValueError:  # validated already
            return
        self._events._on_deliver(origin.to_base58(), message)

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        written = await super().write_msg(stream, rpc_msg)
        if written:
            self._events._on_sent(rpc_msg)
        return written


# -- the facade ------------------------------------------------------------------------------------

class Gossip:
    """One topic of the mesh: publish JSON objects, receive those of authorized origins."""

    def __init__(self, host: IHost, *, is_authorized: Callable[[str], bool], topic: str,
                 max_message_bytes: int) -> None:
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self._router = _router()
        self._pubsub = _Pubsub(host, self._router, topic=topic, max_message_bytes=max_message_bytes,
                               is_authorized=is_authorized, events=self)
        self._inbox = _Inbox()
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._closed = False
        self._published = self._rejected = self._publish_failures = self._refused = 0
        self._rpcs = self._bytes = self._copies = 0

    async def publish(self, message: dict[str, Any]) -> None:
        """Sign and send ``message`` to the mesh. ValueError if it is not a JSON object or is over
        ``max_message_bytes`` encoded; anything else (no peers, a failing pubsub, after
        :meth:`aclose`) is logged at debug and counted, never raised."""
        data = encode_message(message, self.max_message_bytes)
        if self._closed or self._stopped.is_set():
            self._publish_failures += 1
            log.debug("gossip: publish after close, dropped")
            return
        try:
            await self._pubsub.publish(self.topic, data)
        except Exception as exc:
            self._publish_failures += 1
            log.debug("gossip: publish failed: %r", exc)
            return
        self._published += 1

    def messages(self) -> trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]]:
        """A receiver of ``(origin peer id, message)``: each call returns a clone of one channel,
        so receivers share one buffer of :data:`RECEIVE_BUFFER` and each message goes to one of
        them (have one). It ends (EndOfChannel) after :meth:`aclose`, once drained."""
        return self._inbox.receiver()

    def statistics(self) -> GossipStatistics:
        return GossipStatistics(self._published, self._inbox.delivered, self._rejected, self._inbox.dropped,
                                self._publish_failures, self._refused, self._rpcs, self._bytes, self._copies)

    def mesh_peers(self) -> list[str]:
        """Peers in this node's mesh for the topic (those it forwards every message to)."""
        return sorted(p.to_base58() for p in self._router.mesh.get(self.topic, ()))

    def reopen(self, peer_id: str) -> None:
        """Our stream to ``peer_id`` ran on a connection that has closed while another one to the
        peer stays (``direct.py``): open it again now, by pubsub's own path for a stream that died
        (``_handle_dead_peer``, which reopens it while the peer is connected), not at its next write."""
        peer = ID.from_base58(peer_id)
        stream = self._pubsub.peers.get(peer)
        if not self._closed and stream is not None and getattr(getattr(stream, "swarm_conn", None), "is_closed", False):
            self._pubsub._handle_dead_peer(peer)

    async def aclose(self) -> None:
        """Stop pubsub and the router, end the receivers; call before closing the host. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(3):
            self._pubsub.refuse()
            await self._pubsub.wait_inbound_ended()
            self._stop.set()
            await self._stopped.wait()
            for stream in list(self._pubsub.peers.values()):  # our write halves: the peers see EOF
                await close_quietly(stream)
        self._inbox.close()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The pubsub and router services, until :meth:`aclose`; their failure is logged, not raised."""
        started = False
        try:
            async with background_trio_service(self._pubsub), background_trio_service(self._router):
                await self._pubsub.wait_until_ready()
                await self._pubsub.subscribe(self.topic)
                self._pubsub.start_accepting()
                self._register_earlier_peers()
                started = True
                task_status.started()
                await self._stop.wait()
        except Exception as exc:
            if not started:
                raise
            log.error("gossip on %s stopped: %r", self.topic, exc)
        finally:
            self._pubsub.refuse()
            self._stopped.set()

    def _register_earlier_peers(self) -> None:
        """Peers connected before gossip started, which pubsub's notifee never saw: tell them our
        protocols changed (identify push: what they learned at connection had no gossipsub) and
        open our stream to those that speak it."""
        pubsub = self._pubsub
        earlier = {p for p in pubsub.host.get_connected_peers() if not pubsub.is_peer_blacklisted(p)}
        if not earlier:
            return
        pubsub.earlier |= earlier
        pubsub.manager.run_task(push_identify_to_peers, pubsub.host, earlier)
        for peer_id in earlier:
            pubsub.manager.run_task(pubsub.ensure_peer_stream, peer_id)

    # -- _Events, for _Pubsub ----------------------------------------------------------------------
    def _on_deliver(self, origin: str, message: dict[str, Any]) -> None:
        self._inbox.put(origin, message)

    def _on_rejected(self, peer: ID, origin: ID, reason: str) -> None:
        self._rejected += 1
        log.debug("gossip: message from %s (origin %s) rejected: %s", peer, origin, reason)

    def _on_refused(self, peer: ID) -> None:
        self._refused += 1
        log.debug("gossip: stream from unauthorized peer %s refused", peer)

    def _on_sent(self, rpc: rpc_pb2.RPC) -> None:
        self._rpcs += 1
        self._bytes += rpc.ByteSize()
        self._copies += len(rpc.publish)


async def start_gossip(host: IHost, nursery: trio.Nursery, *, is_authorized: Callable[[str], bool],
                       topic: str = WORK_TOPIC, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Gossip:
    """Mount gossip on ``host`` (running, not yet connected to anyone), its tasks in ``nursery``;
    returns once subscribed. Call :meth:`Gossip.aclose` before the host is closed."""
    gossip = Gossip(host, is_authorized=is_authorized, topic=topic, max_message_bytes=max_message_bytes)
    await nursery.start(gossip._run)
    return gossip
