"""The mesh's work scheduling at 1,000 and 10,000 nodes: a discrete-event simulation that runs the
real :mod:`triomcp.taskqueue.scheduling` (one ``Announcer`` and one ``ClaimPlanner`` per node,
called as a node calls them) on a simulated clock.

    .venv/bin/python -m bench.mesh_sim [--quick] [--nodes N ...] [--scenario NAME ...] [--set KEY=JSON ...]

What is modelled (everything else is the scheduling code itself):

- a node: local worker slots that take its own queue first (1, 2 or 4, at random), as many slots
  for remote work (the planner's capacity), a FIFO queue of its own tasks; a task runs for an
  exponential service time (mean 100 ms, drawn when it is submitted). The owner recomputes its
  surplus on every queue change (``surplus(queued, idle local)``) and calls ``Announcer.update``
  and, when ``next_wakeup`` says, ``due``. Each planner's ``crowd`` is the mesh's remote slots.
- gossip: an announcement reaches every other live node after ``hops x per-hop`` (hops drawn from
  the layers of a 6-regular mesh, about ``ceil(log_6 N)``; each hop 1-3 ms), as one event per
  0.5 ms batch of nodes; every planner's ``heard()`` is called, none is skipped (a full planner's
  beliefs still change what it does later, so skipping it would not be the same). It is counted as
  gossipsub sends it: every node forwards it to its D = 6 mesh peers, ``6 x N`` transmissions.
- RPCs: a claim is one round trip (2-10 ms), answered by the owner from its queue (0..n leases and
  what remains); a finished remote task reports its outcome in one round trip, with the follow-on
  claim in it if the planner asked for one. An RPC to a node that left fails (``failed()``).
- churn: 10% of the nodes leave halfway through the submits: they stop submitting and working
  (their queues are lost with them), their running remote tasks are lost, and their leases expire
  on the owners ``lease_seconds`` later and the tasks are queued again there; peers running tasks
  for a node that left see the connection drop (``forget()``), the others learn from failed claims
  and stale beliefs.

Scenarios: ``uniform`` (bursts of 200-600 tasks at random nodes, 25-75 in a mesh of fewer than
1,000 nodes: far more than their 1-4 local slots), ``skewed`` (10% of the nodes receive 90% of the bursts), ``churn`` (uniform, and 10% of
the nodes leave). The offered load is 70% of the mesh's remote slots: another owner's task runs
only in a remote slot, and an owner's local slots take just the head of its own bursts, so nearly
all the work is remote (70% of all slots would overload the remote ones). After the work, a
simulated minute with nothing submitted measures what an idle mesh sends. The submits, the slots
and the service times come from their own random stream, so runs that differ in a scheduling
setting (``--set window=0.1``) see the same work.

Results: bench/results/mesh_sim.json, and a table on stdout (its columns are explained below it).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from triomcp.taskqueue.scheduling import Announcement, Announcer, Claim, ClaimPlanner, surplus

__all__ = ["Config", "Result", "Sim", "main", "run"]

TYPE = "work"
D = 6
"""GossipSub's mesh degree: each node forwards a message to this many peers."""
BUCKET = 0.0005
"""Gossip deliveries are batched into events of this many seconds."""
PLANS = 64
"""Gossip delivery orders precomputed per mesh size (each announcement picks one and a rotation)."""
RESULTS = Path(__file__).resolve().parent / "results" / "mesh_sim.json"


@dataclass(frozen=True)
class Config:
    nodes: int
    scenario: str = "uniform"
    """uniform, skewed or churn."""
    seed: int = 1
    load: float = 0.7
    """Offered work as a fraction of the mesh's remote slots (where another node's work can run);
    the owners' local slots take the head of each burst on top of that."""
    duration: float = 5.0
    """Seconds of submits."""
    burst: int = 400
    """Mean tasks per burst (uniform between half and one and a half times this)."""
    service: float = 0.1
    lease_seconds: float = 2.0
    idle: float = 60.0
    hot_fraction: float = 0.1
    hot_share: float = 0.9
    churn_fraction: float = 0.1
    rtt: tuple[float, float] = (0.002, 0.010)
    per_hop: tuple[float, float] = (0.001, 0.003)
    detect: float = 0.05
    """How long a peer with work in progress on a node that left takes to see the connection drop."""
    crowd_factor: float = 1.0
    """Each planner's ``crowd`` is the mesh's remote slots times this (an integrator's estimate)."""
    window: float = 0.05
    ramp: float = 4.0
    debounce: float = 0.02
    repeat: float = 1.0
    ratio: float = 2.0
    max_batch: int = 8
    stale_after: float = 3.0
    max_owners: int = 64


@dataclass
class Result:
    config: dict[str, Any]
    submitted: int = 0
    done: int = 0
    done_once: bool = True
    lost_with_owner: int = 0
    remote_share: float = 0.0
    spread: dict[str, float] = field(default_factory=dict)
    """Each node's executed tasks over its ideal share (in proportion to its slots, local and remote)."""
    spread_poisson: dict[str, float] = field(default_factory=dict)
    """The same for counts drawn at random around the ideal (Poisson): the spread of pure chance."""
    remote_spread: dict[str, float] = field(default_factory=dict)
    """Remote tasks run per remote slot, over the mesh's mean."""
    per_slot_by_size: dict[str, float] = field(default_factory=dict)
    """Remote tasks per remote slot of the nodes with 1, 2 and 4 of them, over the mean."""
    requeued: int = 0
    """Leases that expired (their worker left) and whose tasks were queued again."""
    announcements: int = 0
    announcements_per_task: float = 0.0
    ann_msgs_per_node_per_task: float = 0.0
    ann_msgs_per_node_per_s: float = 0.0
    claims: int = 0
    claims_per_task: float = 0.0
    wasted_claims: int = 0
    wasted_per_task: float = 0.0
    follow_ons: int = 0
    follow_on_misses: int = 0
    failed_claims: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    local_latency_ms: dict[str, float] = field(default_factory=dict)
    makespan: float = 0.0
    idle_msgs_per_node_per_min: float = 0.0
    idle_claims: int = 0
    idle_announcements: int = 0
    heard_calls: int = 0
    events: int = 0
    wall_s: float = 0.0


def _hop_counts(n: int) -> list[int]:
    """How many of the other ``n - 1`` nodes are 1, 2, ... hops away in a 6-regular mesh."""
    counts, left, layer = [], n - 1, D
    while left > 0:
        counts.append(min(layer, left))
        left -= counts[-1]
        layer *= D - 1
    return counts


def _plans(n: int, cfg: Config, gen: np.random.Generator) -> list[list[tuple[float, np.ndarray]]]:
    """Delivery orders: for each plan, (latency, ranks) per batch; rank r is the r-th other node
    counted from the owner in that announcement's rotation."""
    hops = np.repeat(np.arange(1, len(_hop_counts(n)) + 1), _hop_counts(n))
    plans = []
    for _ in range(PLANS):
        h = gen.permutation(hops)
        per = gen.uniform(cfg.per_hop[0], cfg.per_hop[1], size=(n - 1, int(h.max())))
        mask = np.arange(per.shape[1])[None, :] < h[:, None]
        latency = (per * mask).sum(axis=1)
        batch = np.ceil(latency / BUCKET).astype(np.int64)
        order = np.argsort(batch, kind="stable")
        sorted_batches = batch[order]
        cuts = np.flatnonzero(np.diff(sorted_batches)) + 1
        groups = np.split(order, cuts)
        plans.append([(float(sorted_batches[g_start]) * BUCKET, g)
                      for g_start, g in zip([0, *cuts.tolist()], groups, strict=True)])
    return plans


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Sim:
    """One run. Events are ``(time, seq, handler, a, b)`` on a heap; nodes are indices."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        n = cfg.nodes
        self.rng = random.Random(cfg.seed)
        """The mesh, the submits and the churn: the same workload whatever the scheduling does."""
        self.net = random.Random(cfg.seed + 1)
        """Round trips and gossip orders."""
        self.gen = np.random.default_rng(cfg.seed)
        rng = self.rng
        self.ids = [f"n{i}" for i in range(n)]
        self.index = {peer: i for i, peer in enumerate(self.ids)}
        self.local = [rng.choice((1, 2, 4)) for _ in range(n)]
        self.remote = list(self.local)
        crowd = sum(self.remote) * cfg.crowd_factor
        self.announcers = [Announcer(peer, debounce=cfg.debounce, repeat=cfg.repeat, ratio=cfg.ratio)
                           for peer in self.ids]
        self.planners = [ClaimPlanner(peer, {TYPE: self.remote[i]}, window=cfg.window, ramp=cfg.ramp, max_batch=cfg.max_batch,
                                      stale_after=cfg.stale_after, crowd=crowd, max_owners=cfg.max_owners,
                                      rng=random.Random(cfg.seed * 1_000_003 + i))
                         for i, peer in enumerate(self.ids)]
        self.queues: list[deque[int]] = [deque() for _ in range(n)]
        self.local_busy = [0] * n
        self.alive = [True] * n
        self.live = n
        self.p_wake = [math.inf] * n
        self.a_wake = [math.inf] * n
        self.plans = _plans(n, cfg, self.gen)
        # tasks, by id
        self.t_owner: list[int] = []
        self.t_service: list[float] = []
        """Each task's service time, drawn when it is submitted (the same wherever and however often it runs)."""
        self.t_queued: list[float] = []
        self.t_done: list[int] = []
        self.lease: dict[int, int] = {}
        """Task -> the node holding its lease."""
        self.held: list[set[int]] = [set() for _ in range(n)]
        """Node -> tasks it holds a lease on (running or on their way to it)."""
        self.executed = [0] * n
        self.executed_remote = [0] * n
        self.remote_wait: list[float] = []
        self.local_wait: list[float] = []
        self.heap: list[tuple[float, int, Callable[[Any, Any], None], Any, Any]] = []
        self.seq = 0
        self.now = 0.0
        self.events = 0
        self.heard_calls = 0
        self.announcements = 0
        self.ann_msgs = 0.0
        self.claims = self.wasted = self.follow_ons = self.follow_on_misses = self.failed = 0
        self.outstanding = 0
        self.quiet_at: float | None = None
        self.load_over = False
        self.idle_msgs = 0.0
        self.idle_claims = 0
        self.idle_announcements = 0
        self.last_done = 0.0
        self.lost_with_owner = 0
        self.requeued = 0
        hot = max(1, int(n * cfg.hot_fraction))
        self.hot = rng.sample(range(n), hot) if cfg.scenario == "skewed" else []
        self.burst_rate = cfg.load * sum(self.remote) / cfg.service / cfg.burst

    # -- the event loop -----------------------------------------------------------------------------
    def at(self, when: float, handler: Callable[[Any, Any], None], a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, handler, a, b))

    def run(self) -> Result:
        cfg = self.cfg
        start = time.perf_counter()
        self.at(0.0, self._burst)
        self.at(cfg.duration, self._load_over)
        if cfg.scenario == "churn":
            self.at(cfg.duration / 2, self._churn)
        heap, pop = self.heap, heapq.heappop
        while heap:
            when, _, handler, a, b = pop(heap)
            if self.quiet_at is not None and when > self.quiet_at + cfg.idle:
                break
            self.now = when
            self.events += 1
            handler(a, b)
        return self._result(time.perf_counter() - start)

    def _msgs(self, count: float) -> None:
        if self.quiet_at is not None:
            self.idle_msgs += count

    # -- submits ------------------------------------------------------------------------------------
    def _burst(self, _a: Any, _b: Any) -> None:
        if self.load_over:
            return
        rng, cfg = self.rng, self.cfg
        hot = self.hot and rng.random() < cfg.hot_share
        node = rng.choice(self.hot) if hot else rng.randrange(cfg.nodes)
        if self.alive[node]:
            size = rng.randint(max(1, cfg.burst // 2), max(1, cfg.burst * 3 // 2))
            queue = self.queues[node]
            for _ in range(size):
                task = len(self.t_owner)
                self.t_owner.append(node)
                self.t_service.append(rng.expovariate(1.0 / cfg.service))
                self.t_queued.append(self.now)
                self.t_done.append(0)
                queue.append(task)
            self.outstanding += size
            self._owner_changed(node)
        self.at(self.now + rng.expovariate(self.burst_rate), self._burst)

    def _load_over(self, _a: Any, _b: Any) -> None:
        self.load_over = True
        self._check_quiet()

    def _check_quiet(self) -> None:
        if self.load_over and self.outstanding == 0 and self.quiet_at is None:
            self.quiet_at = self.now

    # -- the owner side -----------------------------------------------------------------------------
    def _owner_changed(self, o: int) -> None:
        queue = self.queues[o]
        now = self.now
        while queue and self.local_busy[o] < self.local[o]:
            task = queue.popleft()
            self.local_busy[o] += 1
            self.local_wait.append(now - self.t_queued[task])
            self.at(now + self.t_service[task], self._local_done, o, task)
        idle = self.local[o] - self.local_busy[o]
        announcer = self.announcers[o]
        announcer.update(now, surplus({TYPE: len(queue)}, {TYPE: idle}))
        self._announcer_wake(o)

    def _announcer_wake(self, o: int) -> None:
        wake = self.announcers[o].next_wakeup()
        if wake is not None and wake < self.a_wake[o]:
            self.a_wake[o] = wake
            self.at(wake, self._announce, o)

    def _announce(self, o: int, _b: Any) -> None:
        if not self.alive[o] or self.now != self.a_wake[o]:
            return
        self.a_wake[o] = math.inf
        ann = self.announcers[o].due(self.now)
        if ann is not None:
            self._publish(o, ann)
        self._announcer_wake(o)

    def _publish(self, o: int, ann: Announcement) -> None:
        self.announcements += 1
        msgs = D * self.live
        self.ann_msgs += msgs
        if self.quiet_at is not None:
            self.idle_announcements += 1
            self.idle_msgs += msgs
        n = self.cfg.nodes
        plan = self.plans[self.net.randrange(PLANS)]
        shift = self.net.randrange(n - 1)
        for latency, ranks in plan:
            self.at(self.now + latency, self._deliver, ann, (o + 1 + (ranks + shift) % (n - 1)) % n)

    def _deliver(self, ann: Announcement, nodes: np.ndarray) -> None:
        now = self.now
        alive, planners, wake = self.alive, self.planners, self.p_wake
        count = 0
        for i in nodes.tolist():
            if not alive[i]:
                continue
            planner = planners[i]
            planner.heard(now, ann)
            count += 1
            w = planner.next_wakeup()
            if w is not None and w < wake[i]:
                wake[i] = w
                self.at(w, self._plan, i)
        self.heard_calls += count

    def _local_done(self, o: int, task: int) -> None:
        if not self.alive[o]:
            return
        self.local_busy[o] -= 1
        self._record(o, task, remote=False)
        self._owner_changed(o)

    def _record(self, runner: int, task: int, *, remote: bool) -> None:
        self.t_done[task] += 1
        self.executed[runner] += 1
        if remote:
            self.executed_remote[runner] += 1
        self.outstanding -= 1
        self.last_done = self.now
        self._check_quiet()

    def _lease(self, o: int, holder: int, count: int) -> tuple[list[int], int]:
        """The owner answers a claim of ``count`` from its queue: the leases and what remains."""
        queue = self.queues[o]
        tasks = [queue.popleft() for _ in range(min(count, len(queue)))]
        for task in tasks:
            self.lease[task] = holder
            self.held[holder].add(task)
        self._owner_changed(o)
        idle = self.local[o] - self.local_busy[o]
        return tasks, surplus({TYPE: len(queue)}, {TYPE: idle})[TYPE]

    # -- the worker side ----------------------------------------------------------------------------
    def _planner_wake(self, i: int) -> None:
        wake = self.planners[i].next_wakeup()
        if wake is not None and wake < self.p_wake[i]:
            self.p_wake[i] = wake
            self.at(wake, self._plan, i)

    def _plan(self, i: int, _b: Any) -> None:
        if not self.alive[i] or self.now != self.p_wake[i]:
            return
        self.p_wake[i] = math.inf
        for claim in self.planners[i].due(self.now):
            self.claims += 1
            if self.quiet_at is not None:
                self.idle_claims += 1
            self._msgs(2)
            half = self.net.uniform(*self.cfg.rtt) / 2
            self.at(self.now + half, self._claim_arrives, i, (claim, half, False))
        self._planner_wake(i)

    def _claim_arrives(self, i: int, args: tuple[Claim, float, bool]) -> None:
        claim, half, follow_on = args
        o = self.index[claim.owner]
        if not self.alive[o]:
            self.at(self.now + half, self._claim_failed, i, claim)
            return
        tasks, remaining = self._lease(o, i, claim.count)
        self.at(self.now + half, self._claim_answered, i, (claim, tasks, remaining, follow_on))

    def _claim_failed(self, i: int, claim: Claim) -> None:
        if not self.alive[i]:
            return
        self.failed += 1
        self.planners[i].failed(self.now, claim)
        self._planner_wake(i)

    def _claim_answered(self, i: int, args: tuple[Claim, list[int], int, bool]) -> None:
        claim, tasks, remaining, follow_on = args
        if not self.alive[i]:  # the leases went to a node that left: they expire on the owner
            for task in tasks:
                self.at(self.now + self.cfg.lease_seconds, self._lease_expired, task, i)
            return
        if not tasks:
            if follow_on:
                self.follow_on_misses += 1
            else:
                self.wasted += 1
        self.planners[i].claimed(self.now, claim, len(tasks), remaining)
        for task in tasks:
            self.remote_wait.append(self.now - self.t_queued[task])
            self.at(self.now + self.t_service[task], self._remote_done, i, task)
        self._planner_wake(i)

    def _remote_done(self, i: int, task: int) -> None:
        if not self.alive[i]:
            return
        owner = self.t_owner[task]
        claim = self.planners[i].follow_on(self.now, self.ids[owner], TYPE)
        if claim is not None:
            self.follow_ons += 1
        self._msgs(2)
        half = self.net.uniform(*self.cfg.rtt) / 2
        self.at(self.now + half, self._outcome_arrives, owner, (i, task, claim, half))
        self._planner_wake(i)

    def _outcome_arrives(self, o: int, args: tuple[int, int, Claim | None, float]) -> None:
        i, task, claim, half = args
        if not self.alive[o]:
            if claim is not None:
                self.at(self.now + half, self._claim_failed, i, claim)
            return
        if self.lease.get(task) == i:  # the outcome is recorded once, by the lease holder
            del self.lease[task]
            self.held[i].discard(task)
            self._record(i, task, remote=True)
        if claim is not None:
            tasks, remaining = self._lease(o, i, claim.count)
            self.at(self.now + half, self._claim_answered, i, (claim, tasks, remaining, True))

    # -- churn --------------------------------------------------------------------------------------
    def _churn(self, _a: Any, _b: Any) -> None:
        n = self.cfg.nodes
        leaving = self.rng.sample(range(n), max(1, int(n * self.cfg.churn_fraction)))
        for node in leaving:
            self.alive[node] = False
            self.live -= 1
        left = set(leaving)
        for node in leaving:
            for task in self.held[node]:  # lost with the worker: the lease expires on its owner
                self.at(self.now + self.cfg.lease_seconds, self._lease_expired, task, node)
            self.held[node] = set()
            self.outstanding -= len(self.queues[node])  # a node that left takes its queue with it
            # ... and the tasks its local workers were running, and those leased out to others
        for task, holder in list(self.lease.items()):
            if self.t_owner[task] in left:
                del self.lease[task]
                self.held[holder].discard(task)
        lost = sum(1 for task, done in enumerate(self.t_done) if not done and self.t_owner[task] in left)
        self.lost_with_owner = lost
        self.outstanding = sum(1 for task, done in enumerate(self.t_done)
                               if not done and self.t_owner[task] not in left)
        # peers running tasks for a node that left see the connection drop
        for worker in range(n):
            if self.alive[worker]:
                for owner in left & self._working_for(worker):
                    self.at(self.now + self.cfg.detect, self._forget, worker, self.ids[owner])

    def _working_for(self, worker: int) -> set[int]:
        return {self.t_owner[task] for task in self.held[worker]}

    def _forget(self, i: int, owner: str) -> None:
        if self.alive[i]:
            self.planners[i].forget(owner)
            self._planner_wake(i)

    def _lease_expired(self, task: int, holder: int) -> None:
        if self.lease.get(task) != holder:
            return
        del self.lease[task]
        self.held[holder].discard(task)
        o = self.t_owner[task]
        if not self.alive[o]:
            return
        self.requeued += 1
        self.t_queued[task] = self.now
        self.queues[o].appendleft(task)
        self._owner_changed(o)

    # -- results ------------------------------------------------------------------------------------
    def _result(self, wall: float) -> Result:
        cfg = self.cfg
        n = cfg.nodes
        stayed = [i for i in range(n) if self.alive[i]]
        live_tasks = [t for t, o in enumerate(self.t_owner) if self.alive[o]]
        done = sum(self.executed)
        res = Result(config=asdict(cfg))
        res.submitted = len(self.t_owner)
        res.done = done
        res.done_once = all(self.t_done[t] == 1 for t in live_tasks)
        res.lost_with_owner = self.lost_with_owner
        res.remote_share = sum(self.executed_remote) / done if done else 0.0
        slots = [self.local[i] + self.remote[i] for i in range(n)]
        res.spread = self._spread(stayed, self.executed, slots)
        total = sum(self.executed[i] for i in stayed)
        capacity = sum(slots[i] for i in stayed)
        chance = [0] * n
        for i, k in zip(stayed, self.gen.poisson([total * slots[i] / capacity for i in stayed]).tolist(),
                        strict=True):
            chance[i] = k
        res.spread_poisson = self._spread(stayed, chance, slots)
        res.remote_spread = self._spread(stayed, self.executed_remote, self.remote)
        remote_total = sum(self.executed_remote[i] for i in stayed) / sum(self.remote[i] for i in stayed)
        for size in sorted(set(self.remote)):
            nodes = [i for i in stayed if self.remote[i] == size]
            if nodes and remote_total:
                per_slot = sum(self.executed_remote[i] for i in nodes) / (size * len(nodes))
                res.per_slot_by_size[str(size)] = per_slot / remote_total
        res.requeued = self.requeued
        res.announcements = self.announcements
        res.announcements_per_task = self.announcements / done if done else 0.0
        res.ann_msgs_per_node_per_task = self.ann_msgs / n / done if done else 0.0
        busy = self.quiet_at if self.quiet_at is not None else self.now
        res.ann_msgs_per_node_per_s = self.ann_msgs / n / busy if busy else 0.0
        res.claims = self.claims
        res.claims_per_task = self.claims / done if done else 0.0
        res.wasted_claims = self.wasted
        res.wasted_per_task = self.wasted / done if done else 0.0
        res.follow_ons = self.follow_ons
        res.follow_on_misses = self.follow_on_misses
        res.failed_claims = self.failed
        res.latency_ms = {"p50": _pct(self.remote_wait, 0.5) * 1000, "p99": _pct(self.remote_wait, 0.99) * 1000}
        res.local_latency_ms = {"p50": _pct(self.local_wait, 0.5) * 1000, "p99": _pct(self.local_wait, 0.99) * 1000}
        res.makespan = self.last_done
        res.idle_msgs_per_node_per_min = self.idle_msgs / n / (cfg.idle / 60)
        res.idle_claims = self.idle_claims
        res.idle_announcements = self.idle_announcements
        res.heard_calls = self.heard_calls
        res.events = self.events
        res.wall_s = wall
        return res

    @staticmethod
    def _spread(nodes: list[int], executed: list[int], slots: list[int]) -> dict[str, float]:
        total = sum(executed[i] for i in nodes)
        capacity = sum(slots[i] for i in nodes)
        if not total or not capacity:
            return {}
        shares = sorted(executed[i] / (total * slots[i] / capacity) for i in nodes if slots[i])
        return {"min": shares[0], "p5": _pct(shares, 0.05), "median": _pct(shares, 0.5),
                "p95": _pct(shares, 0.95), "max": shares[-1]}


def run(cfg: Config) -> Result:
    return Sim(cfg).run()


# -- the command line -------------------------------------------------------------------------------
def _scale(nodes: int, quick: bool) -> dict[str, Any]:
    """Every announcement is heard by every node (``heard()`` calls = announcements x N, about 4 us
    each), so the 10,000-node runs simulate one second of submits; bursts of 400 tasks (50 in a mesh
    of fewer than 1,000 nodes, whose remote slots number about 230)."""
    if nodes >= 10_000:
        return {"burst": 400, "duration": 1.0}
    if nodes >= 1000:
        return {"burst": 400, "duration": 3.0 if quick else 6.0}
    return {"burst": 50, "duration": 10.0}


COLUMNS: list[tuple[str, int, Callable[[Result], object]]] = [
    ("scenario", 8, lambda r: r.config["scenario"]),
    ("nodes", 6, lambda r: r.config["nodes"]),
    ("tasks", 7, lambda r: r.done),
    ("remote", 6, lambda r: f"{r.remote_share:.0%}"),
    ("spread p5-p95", 13, lambda r: f"{r.spread['p5']:.2f}-{r.spread['p95']:.2f}"),
    ("(chance)", 9, lambda r: f"{r.spread_poisson['p5']:.2f}-{r.spread_poisson['p95']:.2f}"),
    ("min-max", 9, lambda r: f"{r.spread['min']:.2f}-{r.spread['max']:.2f}"),
    ("per slot 1/2/4", 14, lambda r: "/".join(f"{v:.2f}" for v in r.per_slot_by_size.values())),
    ("ann/task", 8, lambda r: f"{r.announcements_per_task:.4f}"),
    ("msg/node/task", 13, lambda r: f"{r.ann_msgs_per_node_per_task:.3f}"),
    ("claims/task", 11, lambda r: f"{r.claims_per_task:.3f}"),
    ("wasted/task", 11, lambda r: f"{r.wasted_per_task:.3f}"),
    ("wait p50 ms", 11, lambda r: f"{r.latency_ms['p50']:.1f}"),
    ("p99 ms", 7, lambda r: f"{r.latency_ms['p99']:.1f}"),
    ("idle msg/node/min", 17, lambda r: f"{r.idle_msgs_per_node_per_min:.1f}"),
    ("once", 4, lambda r: "yes" if r.done_once else "NO"),
    ("wall s", 6, lambda r: f"{r.wall_s:.0f}"),
]
FOOTNOTE = """\
spread: tasks run by a node over its share in proportion to its slots (p5-p95 of the nodes; chance:
the same for counts drawn at random around each share). per slot 1/2/4: remote tasks per remote
slot of the nodes with 1, 2 and 4, over the mean. msg/node/task: gossip transmissions of
announcements (6 per node per announcement) per node per task. wasted: claims answered with no
lease (follow-ons in outcome reports are not counted: they cost no message of their own). wait:
queued until started, for tasks run remotely. idle: announcements and claims of the minute after
the work. Not counted: gossipsub's heartbeat (1 s) sends IHAVE to at most 6 non-mesh peers while a
message is in its last 3 heartbeats' cache, so at most 6 control messages per node a second while
work is announced, whatever the rate, and none on an idle topic (GRAFT/PRUNE only when the mesh
changes). The scheme this replaces, one 55 s long-poll per peer and type, re-issues
2 x (N - 1) x 60 / 55 messages per node a minute: about 2,200 at 1,000 nodes, 22,000 at 10,000."""


def _line(cells: Sequence[object]) -> str:
    return "  ".join(f"{c!s:>{w}}" for c, (_, w, _) in zip(cells, COLUMNS, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mesh_sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes instead of 1,000 and 10,000")
    parser.add_argument("--nodes", type=int, nargs="*", help="mesh sizes (default: 1000 10000)")
    parser.add_argument("--scenario", nargs="*", choices=("uniform", "skewed", "churn"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="override a Config field, e.g. window=0.1 crowd_factor=3")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = args.nodes or ([100, 1000] if args.quick else [1000, 10_000])
    scenarios = args.scenario or ["uniform", "skewed", "churn"]
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    print(_line([name for name, _, _ in COLUMNS]), flush=True)
    results = []
    for nodes in sizes:
        for scenario in scenarios:
            cfg = Config(nodes=nodes, scenario=scenario, seed=args.seed, **{**_scale(nodes, args.quick), **overrides})
            res = run(cfg)
            results.append(res)
            print(_line([cell(res) for _, _, cell in COLUMNS]), flush=True)
    print(FOOTNOTE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
