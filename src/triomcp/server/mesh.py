"""The mesh: owners announce their surplus work over GossipSub, idle workers claim it.

Who does what (the decisions are sans-I/O, in :mod:`triomcp.taskqueue.scheduling`; this module
only moves them on and off the network):

- **Owner side** (:meth:`MeshScheduler._announce`): a node whose queue holds more claimable tasks
  of a type than it has idle local workers for that type publishes an
  :class:`~triomcp.taskqueue.scheduling.Announcement` of the surplus on the work topic
  (:mod:`triomcp.p2p.gossip`): debounced, repeated while a surplus remains, and once more when it
  is drained. An owner whose own workers are free announces nothing: it does not ship work away.
  An idle mesh is silent.
- **Worker side** (:meth:`MeshScheduler._hear`, :meth:`MeshScheduler._claim`): the
  :class:`~triomcp.taskqueue.scheduling.ClaimPlanner` hears announcements from listed peers and
  says when to claim how many tasks from whom (a random delay, shorter with more free slots, so 60
  idle workers do not all claim at once). A claim is one ``taskqueue_claim`` call with
  ``max_tasks`` on the owner, dialed on demand if this node is not connected to it (connections are
  bounded; the work of the whole mesh still reaches every node through gossip). Each lease runs in
  one of this node's remote-work slots (``taskqueue.mesh_concurrency`` per type) through a
  :class:`RemoteSource`; a busy slot asks for its next task in the same call that records the
  outcome (``claim_next``), so a stream of tasks costs one round trip each.

Standing requests are gone: a node keeps no long-poll on any peer, so what an idle node costs does
not grow with the mesh. Leases, renewals and the exactly-once outcome are the queue's, unchanged: a
worker that disappears lets its lease expire on the owner, and the task runs again elsewhere.

Size: a little over 300 lines: the owner's loop, the worker's three (hear, plan, claim) and the
slots that run leases, each short; the decisions themselves are in ``taskqueue/scheduling.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from triomcp.server.remote_source import RemoteSource
from triomcp.server.seams import MeshNode
from triomcp.taskqueue import HandlerRegistry, Lease, TaskQueue, run_one
from triomcp.taskqueue.scheduling import MAX_ADDRS, Announcement, Announcer, Claim, ClaimPlanner, surplus
from triomcp.taskqueue.signals import Signal

__all__ = ["MeshScheduler", "MeshStatistics", "RemoteSource", "WorkMesh"]

log = logging.getLogger("triomcp.mesh")

UNCONNECTED_DELAY = 0.2
"""Up to this long (at least half of it) a claim on an owner this node is not connected to waits
first, for the owner's connected peers to take the work (a drained announcement calls it off)."""
CROWD_EVERY = 5.0
"""Seconds between estimates of the crowd that hears an announcement (the peers known times this
node's slots: the planner's claim timing scales with it)."""
QUERY_INTERVAL = 0.01
"""At most one count of the claimable tasks per this many seconds on an owner (a busy queue
changes thousands of times a second; the announcement is debounced anyway)."""


class Gossip(Protocol):
    """The work topic (:class:`triomcp.p2p.gossip.Gossip`)."""

    async def publish(self, message: dict[str, Any]) -> None: ...
    def messages(self) -> trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]]: ...


class WorkMesh(MeshNode, Protocol):
    """What the scheduler needs of the node beside a :class:`MeshNode`."""

    @property
    def gossip(self) -> Gossip | None: ...

    def is_connected(self, peer_id: str) -> bool: ...

    def announced_addrs(self, limit: int | None = None) -> list[str]:
        """The addresses peers are told (listen ones, then relayed ones; relayed kept within ``limit``)."""
        ...

    async def ensure_connected(self, peer_id: str, addrs: Sequence[str] = ()) -> None: ...

    def protect(self, peer_id: str) -> contextlib.AbstractContextManager[None]: ...


@dataclass(frozen=True)
class MeshStatistics:
    announced: int
    """Announcements this node published as an owner."""
    heard: int
    """Announcements from listed peers this node's planner heard."""
    claims: int
    """``taskqueue_claim`` calls sent to owners."""
    empty_claims: int
    """Claims answered with no task (another worker was quicker)."""
    failed_claims: int
    leases: int
    """Tasks leased from owners (claims and follow-ons)."""
    stood_down: int
    """Claims on owners this node was not connected to, called off because the owner drained first."""
    running: int
    """Tasks of other owners running here now."""


class MeshScheduler:
    """One node's part of the mesh: announce its own surplus, claim and run other owners' work."""

    def __init__(
        self,
        node: WorkMesh,
        queue: TaskQueue | None,
        registry: HandlerRegistry,
        *,
        concurrency: dict[str, int],
        lease_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.queue = queue
        self.registry = registry
        self.lease_seconds = lease_seconds
        capacity = {t: max(0, concurrency.get(t, concurrency.get("*", 1))) for t in registry.types()}
        self.planner = ClaimPlanner(node.peer_id, capacity, rng=rng)
        # Sequence numbers from the clock: peers that heard this node before a restart hear it at once.
        self.announcer = Announcer(node.peer_id, first_seq=time.time_ns())
        self._slots = max(capacity.values(), default=0)
        self._crowd_at = -math.inf
        self._sources: dict[str, RemoteSource] = {}
        self._addrs: dict[str, tuple[str, ...]] = {}
        self._drained_at: dict[tuple[str, str], float] = {}
        """(owner, type) -> when the owner last announced it has none of that type left."""
        self._stood_down = 0
        self._types: dict[str, str] = {}
        """Leased task id -> its type (for the follow-on decision as its outcome is recorded)."""
        self._changed = Signal()
        """Fired when the planner may have claims due sooner (the planning loop re-plans)."""
        self._nursery: trio.Nursery | None = None
        self._heard = self._claims = self._empty = self._failed = self._leases = self._running = 0

    def statistics(self) -> MeshStatistics:
        return MeshStatistics(self.announcer.announced, self._heard, self._claims, self._empty, self._failed,
                              self._leases, self._stood_down, self._running)

    def _poke(self) -> None:
        self._changed.fire()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        gossip = self.node.gossip
        if gossip is None:  # no work topic on this node: nothing to announce or hear
            task_status.started()
            await trio.sleep_forever()
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.queue is not None:
                nursery.start_soon(self._announce, self.queue, gossip)
            if any(self.planner.free(t) for t in self.registry.types()):
                nursery.start_soon(self._hear, gossip)
                nursery.start_soon(self._plan)
            task_status.started()

    # -- owner side ---------------------------------------------------------------------------------
    async def _announce(self, queue: TaskQueue, gossip: Gossip) -> None:
        announcer = self.announcer
        last_query = -math.inf
        while True:
            changed = queue.backlog_changed()
            await trio.sleep_until(last_query + QUERY_INTERVAL)
            last_query = trio.current_time()
            counts, due_at = await queue.claimable()
            idle = queue.idle_workers()
            anyone = idle.get("*", 0)
            now = trio.current_time()
            announcer.update(now, surplus(counts, {t: idle.get(t, 0) + anyone for t in counts}))
            announcement = announcer.due(now)
            if announcement is not None:
                try:
                    # The addresses as they are now, read only when something is published (with
                    # a wildcard listen address, each read lists the machine's interfaces).
                    # At most what receivers accept (more and they would refuse the announcement);
                    # relayed ones (a node behind NAT) kept.
                    addrs = tuple(self.node.announced_addrs(MAX_ADDRS))
                    await gossip.publish(dataclasses.replace(announcement, addrs=addrs).to_wire())
                except ValueError as exc:  # more types than one message holds: the owner's own workers still run them
                    log.warning("announcing work: %s", exc)
            wake = min((t for t in (announcer.next_wakeup(), due_at) if t is not None), default=math.inf)
            with trio.move_on_at(wake):
                await changed.wait()

    # -- worker side --------------------------------------------------------------------------------
    async def _hear(self, gossip: Gossip) -> None:
        async for origin, message in gossip.messages():
            if origin == self.node.peer_id or not self.node.authorized.is_listed(origin):
                continue  # this node claims only from the peers it lists
            try:
                announcement = Announcement.from_wire(message, owner=origin)
            except ValueError as exc:
                log.debug("a bad work announcement from %s: %s", origin, exc)
                continue
            self._heard += 1
            now = trio.current_time()
            if now - self._crowd_at >= CROWD_EVERY:  # how many free slots hear one announcement, roughly
                self._crowd_at = now
                self.planner.crowd = float(max(1, (len(self.node.known_peers()) + 1) * self._slots))
            if announcement.addrs:
                self._addrs[origin] = announcement.addrs
            for task_type, count in announcement.surplus.items():
                if count == 0:
                    self._drained_at[(origin, task_type)] = now
            self.planner.heard(now, announcement)
            self._poke()

    async def _plan(self) -> None:
        while True:
            changed = self._changed.arm()
            assert self._nursery is not None
            for claim in self.planner.due(trio.current_time()):
                self._nursery.start_soon(self._claim, claim)
            wake = self.planner.next_wakeup()
            with trio.move_on_at(math.inf if wake is None else wake):
                await changed.wait()

    def _source(self, owner: str) -> RemoteSource:
        source = self._sources.get(owner)
        if source is None:
            source = self._sources[owner] = RemoteSource(self.node, owner)
            source.follow_on = lambda task_id: self._follow_on(owner, task_id)
            source.answered = self._answered
        return source

    def _follow_on(self, owner: str, task_id: str) -> Claim | None:
        task_type = self._types.get(task_id)
        if task_type is None:
            return None
        claim = self.planner.follow_on(trio.current_time(), owner, task_type)
        if claim is not None:
            self._claims += 1
        self._poke()
        return claim

    def _answered(self, claim: Claim, leases: list[Lease] | None, remaining: int | None) -> None:
        if leases is None:  # the outcome's call failed: no next task came, and the owner is backed off
            self._failed += 1
            self.planner.failed(trio.current_time(), claim)
            self._poke()
            return
        self._took(claim, leases, remaining)

    def _took(self, claim: Claim, leases: list[Lease], remaining: int | None) -> list[Lease]:
        extra = leases[claim.count:]
        leases = leases[:claim.count]
        self.planner.claimed(trio.current_time(), claim, len(leases), remaining)
        self._leases += len(leases)
        if not leases:
            self._empty += 1
        for lease in leases:
            self._types[lease.task.id] = lease.task.type
        for lease in extra:  # more than asked: give them back
            assert self._nursery is not None
            self._nursery.start_soon(self._give_back, claim.owner, lease)
        self._poke()
        return leases

    async def _give_back(self, owner: str, lease: Lease) -> None:
        with contextlib.suppress(Exception):
            await self._source(owner).release(lease.task.id, lease.token)

    async def _claim(self, claim: Claim) -> None:
        """One claim on an owner; each lease it brings runs in a slot of its own."""
        source = self._source(claim.owner)
        if not self.node.is_connected(claim.owner):
            # The owner's connected peers claim first: a dial costs a handshake on both sides, and
            # when many nodes hear one announcement most are not connected to its owner. Stand down
            # if the owner says it is drained meanwhile (the slots are free again at once).
            asked = trio.current_time()
            await trio.sleep(random.uniform(0.5, 1.0) * UNCONNECTED_DELAY)
            if self._drained_at.get((claim.owner, claim.task_type), -math.inf) >= asked:
                self._stood_down += 1
                self.planner.claimed(trio.current_time(), claim, 0, 0)
                self._poke()
                return
        self._claims += 1
        try:
            with trio.fail_after(self.node.settings.dial_timeout + self.node.settings.call_timeout):
                await self.node.ensure_connected(claim.owner, self._addrs.get(claim.owner, ()))
                leases, remaining = await source.claim([claim.task_type], claim.count)
        except Exception as exc:  # the owner is unreachable or refused: the planner backs off
            self._failed += 1
            log.info("claiming %s tasks from %s failed: %s", claim.task_type, claim.owner[:16], exc)
            self.planner.failed(trio.current_time(), claim)
            self._poke()
            return
        for lease in self._took(claim, leases, remaining):
            assert self._nursery is not None
            self._nursery.start_soon(self._run_slot, claim.owner, lease)

    async def _run_slot(self, owner: str, lease: Lease | None) -> None:
        """Run a lease, then the leases its outcomes brought, in one slot."""
        source = self._source(owner)
        self._running += 1
        try:
            with self.node.protect(owner):
                while lease is not None:
                    task = lease.task
                    try:
                        await run_one(source, lease, self.registry.get(task.type),
                                      renew_every=self.lease_seconds / 3)
                    finally:
                        self._types.pop(task.id, None)
                        if task.id in source.accounted:
                            source.accounted.discard(task.id)
                        else:
                            self.planner.finished(owner, task.type)
                            self._poke()
                    lease = source.take_following(task.id)
        finally:
            self._running -= 1

