"""Who announces work and who claims it: sans-I/O, time passed in, randomness injected.

An owner with more queued tasks of a type than its idle local workers will take (its *surplus*,
:func:`surplus`) announces it to the whole mesh (:class:`Announcer`); idle workers elsewhere hear
it and claim from the owner (:class:`ClaimPlanner`). Nothing here does I/O or reads a clock: the
server moves :class:`Announcement` values over GossipSub and :class:`Claim` values over RPC, and
``bench/mesh_sim.py`` runs these same classes on a simulated clock at 10,000 nodes.

Owner side (:class:`Announcer`), per type, against what was last published::

    change                                    announced
    0 -> n > 0 (appeared)                     after ``debounce`` (later changes coalesce into it)
    n -> m, m >= n * ratio or m <= n / ratio  after ``debounce``
    n -> m, within that ratio                 only by the next repeat (it carries m)
    n -> 0 (drained)                          at once, once
    any surplus > 0                           repeated every ``repeat`` seconds
    everything drained and published          silence

An announcement is a full snapshot of the owner's surplus: every type > 0, plus the types that just
dropped to 0; a type absent from it is 0. A lost announcement is made good by the next repeat, a lost
drain by the next repeat of another type or, at the latest, by the listeners' ``stale_after``. A
drain skips the debounce because every claim sent before it arrives may be wasted (the crowd's
claims grow e-fold every ``tau``, below); work that comes back is debounced again, so an owner
publishes at most two announcements per ``debounce``. Small moves of a count are left to the
repeats because an announcement costs a message on every node of the mesh, while a listener's
claim rate depends on the count only in proportion, and the owner's answers tell the workers it
already has how much remains.

Worker side (:class:`ClaimPlanner`). A listener with ``w`` free slots of a type that hears a surplus
``s`` claims ``c = min(w, s, max_batch)`` tasks after a random delay ``d``, with::

    P(d <= t) = 1 - (1 - F(t)) ** (w / c),    F(t) = min(1, (s / crowd) * e ** (t / tau)),
    tau = window / min(ln(crowd / s), ramp)

``crowd`` estimates how many free slots hear one announcement (settable: the peers known times
the slots per node). Each free slot is a suppression timer, as SRM's repair timers and Nonnenmacher
and Biersack's exponential feedback timers ("Scalable feedback for large groups", 1999): if
``crowd`` slots are free, about ``s`` tasks are asked for at once, the claims then grow e-fold every
``tau``, and the owner's drain, reaching them ``D`` seconds after the last lease, stops them at
about ``s * e ** (D / tau)`` tasks asked for, whatever the size of the mesh. A lone free slot claims
within ``window`` (within ``tau * ln(crowd / s)`` when that ratio exceeds ``e ** ramp``: the ramp
never gets steeper, so a crowd overestimated a hundredfold costs latency, not a herd).
Overestimating ``crowd`` by k costs ``tau * ln(k)`` of latency; underestimating it costs k times
the claims. The exponent ``w / c`` makes a node with more free slots claim sooner in proportion, so
the tasks asked for are in proportion to free slots, not to their square.

The listener then believes the owner has ``s - c`` left (optimistic decrement). A drain, a short
answer (fewer leases than asked, or ``remaining == 0``) or ``stale_after`` without a repeat ends
the belief and cancels a claim pending on it. A slot freed by a local event (a task ended without
a follow-on, a claim failed or came back short) claims at once only with the timer's probability
at 0, ``F(0)``, and otherwise waits for news (any owner's announcement, a repeat): slots are freed
all over the mesh all the time, and a freed slot sure to claim would send every freed slot of the
mesh at the owners believed to have work until their drains arrive, a waste that grows with the
mesh. When the owner to claim from is not the one whose announcement set the timer, it is picked
in proportion to its believed surplus, so claims spread over the owners. A task that ends in a
slot asks its owner for the next one in the RPC that reports its outcome
(:meth:`ClaimPlanner.follow_on`) while
that owner is believed to have more: a busy worker costs one round trip per task and no
announcement at all.

Size: over 300 lines on purpose: the two halves of one protocol, whose timing and wire format are
designed, analysed (above) and tested together; splitting it would put this analysis in neither.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from triomcp._retry import capped_delay

__all__ = [
    "MAX_ADDRS",
    "MAX_ADDR_CHARS",
    "MAX_COUNT",
    "MAX_SEQ",
    "MAX_TYPE_CHARS",
    "Announcement",
    "Announcer",
    "Claim",
    "ClaimPlanner",
    "surplus",
]

MAX_COUNT = 10**6
"""The largest count an announcement carries (an owner with more announces this many)."""
MAX_TYPE_CHARS = 128
MAX_ADDRS = 8
MAX_ADDR_CHARS = 256
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Announcement:
    """An owner's surplus per task type, as published on the work topic (immutable)."""

    owner: str
    """The peer id; on the receiving side always the authenticated origin of the message."""
    seq: int
    """Per owner, strictly increasing."""
    surplus: Mapping[str, int]
    """Task type -> tasks beyond the owner's idle local workers (0 = drained; absent = 0)."""
    addrs: tuple[str, ...] = ()
    """The owner's multiaddrs, for dialing it on demand."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "surplus", MappingProxyType(dict(self.surplus)))
        object.__setattr__(self, "addrs", tuple(self.addrs))

    @property
    def drained(self) -> bool:
        return not any(self.surplus.values())

    def to_wire(self) -> dict[str, Any]:
        """The JSON object published; the owner is not in it (it is the message's signed origin)."""
        wire: dict[str, Any] = {"seq": self.seq, "surplus": dict(self.surplus)}
        if self.addrs:
            wire["addrs"] = list(self.addrs)
        return wire

    @classmethod
    def from_wire(cls, data: object, *, owner: str, max_types: int = 64) -> Announcement:
        """Validate a received object; ``owner`` is the authenticated origin (an ``owner`` field in
        ``data`` is ignored, as are keys this version does not know). Raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError("an announcement is a JSON object")
        seq = data.get("seq")
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"announcement seq must be an integer in 0..{MAX_SEQ}")
        counts = data.get("surplus")
        if not isinstance(counts, dict):
            raise ValueError("announcement surplus must be an object")
        if len(counts) > max_types:
            raise ValueError(f"announcement names {len(counts)} task types (at most {max_types})")
        for task_type, count in counts.items():
            if not isinstance(task_type, str) or not 0 < len(task_type) <= MAX_TYPE_CHARS:
                raise ValueError(f"announcement task type must be a string of 1..{MAX_TYPE_CHARS} characters")
            if type(count) is not int or not 0 <= count <= MAX_COUNT:
                raise ValueError(f"announcement count of {task_type!r} must be an integer in 0..{MAX_COUNT}")
        addrs = data.get("addrs", [])
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS:
            raise ValueError(f"announcement addrs must be a list of at most {MAX_ADDRS}")
        suffix = f"/p2p/{owner}"
        for addr in addrs:
            if not isinstance(addr, str) or len(addr) > MAX_ADDR_CHARS or not addr.endswith(suffix):
                raise ValueError(f"announcement addr must be a string of at most {MAX_ADDR_CHARS} "
                                 f"characters ending in {suffix}")
        return cls(owner, seq, counts, tuple(addrs))


def surplus(queued: Mapping[str, int], idle_local: Mapping[str, int]) -> dict[str, int]:
    """Per type, the queued tasks beyond what the owner's idle local workers will take: an owner
    whose own workers are free does not ship its work away."""
    return {t: max(0, n - idle_local.get(t, 0)) for t, n in queued.items()}


class Announcer:
    """The owner side: what to publish when (the table in the module docstring)."""

    def __init__(
        self,
        owner: str,
        *,
        debounce: float = 0.02,
        repeat: float = 1.0,
        addrs: Sequence[str] = (),
        ratio: float = 2.0,
        first_seq: int = 0,
    ) -> None:
        """``ratio``: a count that moves by less than this factor is carried only by the repeats
        (1.0: announce every change). ``first_seq``: the first announcement's seq; pass something
        that grows across restarts (the clock in nanoseconds), or listeners ignore a restarted owner
        until its old announcements go stale."""
        self.owner = owner
        self.debounce = debounce
        self.repeat = repeat
        self.ratio = ratio
        self.addrs: tuple[str, ...] = tuple(addrs)
        self.seq = first_seq
        """The seq of the next announcement."""
        self.announced = 0
        self._current: dict[str, int] = {}
        self._published: dict[str, int] = {}
        self._published_at = -math.inf
        self._changed_at: float | None = None
        """When the first change worth announcing (and not yet published) was seen."""
        self._drained = False
        """A published type has dropped to 0: announce without waiting for the debounce."""

    def update(self, now: float, surplus: Mapping[str, int]) -> None:
        """The current surplus per type (types absent are 0)."""
        current = {t: min(n, MAX_COUNT) for t, n in surplus.items() if n > 0}
        published = self._published
        self._current = current
        self._drained = any(t not in current for t in published)
        if self._drained or any(self._moved(published.get(t, 0), n) for t, n in current.items()):
            if self._changed_at is None:
                self._changed_at = now
        else:
            self._changed_at = None

    def _moved(self, was: int, now: int) -> bool:
        if was == 0 or now == was:
            return was != now
        return self.ratio <= 1.0 or now >= was * self.ratio or now * self.ratio <= was

    def next_wakeup(self) -> float | None:
        """When to call :meth:`due` next; None: nothing pending (an idle owner is silent)."""
        if self._changed_at is not None:
            return self._changed_at if self._drained else self._changed_at + self.debounce
        if self._published:
            return self._published_at + self.repeat
        return None

    def due(self, now: float) -> Announcement | None:
        """What to publish now, if anything; once returned it counts as published."""
        wake = self.next_wakeup()
        if wake is None or now < wake:
            return None
        counts = {t: 0 for t in self._published if t not in self._current}
        counts.update(self._current)
        announcement = Announcement(self.owner, self.seq, counts, self.addrs)
        self.seq += 1
        self.announced += 1
        self._published = dict(self._current)
        self._published_at = now
        self._changed_at = None
        self._drained = False
        return announcement


@dataclass(frozen=True)
class Claim:
    """Ask ``owner`` for up to ``count`` leases of ``task_type``."""

    owner: str
    task_type: str
    count: int


class _Owner:
    """What a planner believes of one owner."""

    __slots__ = ("heard_at", "seq", "surplus")

    def __init__(self, seq: int, heard_at: float) -> None:
        self.seq = seq
        self.heard_at = heard_at
        self.surplus: dict[str, int] = {}


class ClaimPlanner:
    """The worker side, one per node, for remote work: when to claim how many tasks from whom.

    Accounting per type: ``free = capacity - busy - reserved``; a claim in flight (or a follow-on)
    reserves its count, its answer turns ``got`` of it into busy slots and frees the rest, a task's
    end frees its slot. Calls that do not match what is in flight (an unknown claim, a task that is
    not running) change nothing, so ``0 <= free <= capacity`` always holds.
    """

    def __init__(
        self,
        me: str,
        capacity: Mapping[str, int],
        *,
        window: float = 0.05,
        max_batch: int = 8,
        stale_after: float = 3.0,
        rng: random.Random | None = None,
        crowd: float = 1000.0,
        max_owners: int = 64,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        ramp: float = 4.0,
    ) -> None:
        """``capacity``: task type -> worker slots this node gives to remote work (absent: none).
        ``crowd`` (settable): how many free slots of the mesh may hear one announcement (module
        docstring); the peers known times the slots per node is a fine estimate. ``max_owners``:
        beliefs kept at once (a new owner replaces a random one this node has no work of).
        ``backoff_*``: after a failed claim that owner is left alone for 1 s, doubling to 30 s,
        until a claim on it is answered."""
        self.me = me
        self.window = window
        self.max_batch = max(1, max_batch)
        self.stale_after = stale_after
        self.crowd = crowd
        self.ramp = ramp
        self.max_owners = max(1, max_owners)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._capacity = {t: n for t, n in capacity.items() if n > 0}
        self._busy = dict.fromkeys(self._capacity, 0)
        self._reserved = dict.fromkeys(self._capacity, 0)
        self._owners: dict[str, _Owner] = {}
        self._order: list[str] = []
        self._pos: dict[str, int] = {}
        """The owners as a list too, to evict a random one in O(1)."""
        self._total = dict.fromkeys(self._capacity, 0)
        """Type -> the surplus believed over all owners (stale beliefs until pruned)."""
        self._running: dict[tuple[str, str], int] = {}
        self._inflight: dict[Claim, int] = {}
        self._active: dict[str, int] = {}
        """Owner -> this node's slots running or reserved for its tasks (its belief is not evicted)."""
        self._backoff: dict[str, tuple[float, int]] = {}
        """Owner -> (until, failures in a row)."""
        self._timers: dict[str, tuple[float, str | None]] = {}
        """Type -> (when to claim, the owner whose announcement set it, if any)."""
        self._wake: float | None = None
        self._now = -math.inf
        """The latest time a call passed in (:meth:`finished` has none of its own)."""
        self._next_prune = -math.inf

    # -- accounting ---------------------------------------------------------------------------------
    def free(self, task_type: str) -> int:
        cap = self._capacity.get(task_type, 0)
        return cap - self._busy[task_type] - self._reserved[task_type] if cap else 0

    def busy(self, task_type: str) -> int:
        return self._busy.get(task_type, 0)

    def believed(self, owner: str, task_type: str) -> int:
        """The surplus this planner believes ``owner`` has of ``task_type`` (tests, metrics)."""
        rec = self._owners.get(owner)
        return rec.surplus.get(task_type, 0) if rec is not None else 0

    # -- hearing ------------------------------------------------------------------------------------
    def heard(self, now: float, ann: Announcement) -> None:
        """An announcement arrived. Ignored: our own, one not newer than the last heard from that
        owner (unless that went stale: the owner may have restarted), types we do not run."""
        owner = ann.owner
        if owner == self.me:
            return
        self._now = now
        rec = self._owners.get(owner)
        if rec is not None and ann.seq <= rec.seq and now - rec.heard_at <= self.stale_after:
            return
        capacity = self._capacity
        new = {t: n for t, n in ann.surplus.items() if n > 0 and t in capacity}
        if rec is None:
            if not new:
                return
            rec = self._admit(owner, ann.seq, now)
            if rec is None:
                return
        old = rec.surplus
        rec.seq = ann.seq
        rec.heard_at = now
        rec.surplus = new
        total, timers = self._total, self._timers
        for t, n in old.items():
            total[t] -= n
            if t not in new:
                timer = timers.get(t)
                if timer is not None and timer[1] == owner:
                    self._lost(now, t)
        if not new:
            return
        backoff = self._backoff.get(owner)
        backed_off = backoff is not None and backoff[0] > now
        busy, reserved = self._busy, self._reserved
        for t, n in new.items():
            total[t] += n
            free = capacity[t] - busy[t] - reserved[t]
            if free > 0 and not backed_off:
                self._arm(now + self._delay(free, n), t, owner)

    def forget(self, owner: str) -> None:
        """The owner left: drop what we heard of it (its running tasks keep their slots until
        :meth:`finished`)."""
        rec = self._owners.get(owner)
        if rec is not None:
            self._drop(owner, rec)
        self._backoff.pop(owner, None)

    # -- claiming -----------------------------------------------------------------------------------
    def next_wakeup(self) -> float | None:
        """When to call :meth:`due` next; None: nothing pending."""
        return self._wake

    def due(self, now: float) -> list[Claim]:
        """The claims to send now; their counts are reserved until :meth:`claimed` or :meth:`failed`."""
        self._now = now
        if now >= self._next_prune:
            self._prune(now)
        claims: list[Claim] = []
        for t, (when, hint) in list(self._timers.items()):
            if when > now:
                continue
            del self._timers[t]
            free = self.free(t)
            if free <= 0:
                continue
            owner = self._pick(now, t, hint)
            if owner is None:  # everyone believed to have work is backed off: try when the first is not
                until = min((u for o, (u, _) in self._backoff.items() if u > now and self.believed(o, t)),
                            default=None)
                if until is not None:
                    self._timers[t] = (until, None)
                continue
            rec = self._owners[owner]
            count = min(free, rec.surplus[t], self.max_batch)
            claims.append(self._reserve(owner, t, count))
            self._take(rec, t, count)
            self._rearm(now, t)
        self._rewake()
        return claims

    def claimed(self, now: float, claim: Claim, got: int, remaining: int | None = None) -> None:
        """The owner answered ``claim``: ``got`` leases (at most ``count``) now run in the reserved
        slots, the rest are freed; ``remaining``: the owner's surplus left, if it said."""
        if not self._release(claim):
            return
        self._now = now
        owner, t = claim.owner, claim.task_type
        got = max(0, min(got, claim.count))
        self._busy[t] += got
        if got:
            key = (owner, t)
            self._running[key] = self._running.get(key, 0) + got
            self._activate(owner, got)
        self._backoff.pop(owner, None)
        left = remaining if remaining is not None else (0 if got < claim.count else None)
        if left is not None:
            left = max(0, min(left, MAX_COUNT))
            rec = self._owners.get(owner)
            if rec is None and left > 0:
                rec = self._admit(owner, -1, now)
            if rec is not None:
                rec.heard_at = max(rec.heard_at, now)
                had = rec.surplus.pop(t, 0)
                self._total[t] += left - had
                if left:
                    rec.surplus[t] = left
                elif had:
                    timer = self._timers.get(t)
                    if timer is not None and timer[1] == owner:
                        self._lost(now, t)
        if got < claim.count:  # a short answer: likely one of a crowd that lost the race, all freed at once
            self._kick(t)
        self._rewake()

    def failed(self, now: float, claim: Claim) -> None:
        """The claim's RPC failed: free its reservation and leave that owner alone for a while."""
        if not self._release(claim):
            return
        self._now = now
        owner = claim.owner
        failures = self._backoff.get(owner, (0.0, 0))[1] + 1
        self._backoff[owner] = (now + capped_delay(failures - 1, base=self.backoff_base, cap=self.backoff_cap),
                                failures)
        self._kick(claim.task_type)

    def follow_on(self, now: float, owner: str, task_type: str) -> Claim | None:
        """A task of ``owner`` just ended in one of our slots. If that owner is believed to have more,
        keep the slot reserved and return a claim of 1 to send with the outcome (answer it with
        :meth:`claimed`); else free the slot and return None."""
        self._now = now
        key = (owner, task_type)
        running = self._running.get(key, 0)
        if not running:
            return None
        self._end(key, running)
        rec = self._owners.get(owner)
        backoff = self._backoff.get(owner)
        if (rec is not None and rec.surplus.get(task_type, 0) > 0 and now - rec.heard_at <= self.stale_after
                and not (backoff is not None and backoff[0] > now)):
            claim = self._reserve(owner, task_type, 1)
            self._activate(owner, -1)  # the slot moves from running to reserved for the same owner
            self._take(rec, task_type, 1)
            return claim
        self._activate(owner, -1)
        self._kick(task_type)
        return None

    def finished(self, owner: str, task_type: str) -> None:
        """A task ended without a follow-on (it failed, was cancelled, its outcome was not
        delivered...): free its slot."""
        key = (owner, task_type)
        running = self._running.get(key, 0)
        if not running:
            return
        self._end(key, running)
        self._activate(owner, -1)
        self._kick(task_type)

    # -- timers -------------------------------------------------------------------------------------
    def _delay(self, free: int, surplus: int) -> float:
        """The suppression timer of the module docstring: ``free`` slots, a surplus of ``surplus``."""
        share = surplus / self.crowd if self.crowd > 0 else 1.0
        if share >= 1.0:
            return 0.0
        count = min(free, surplus, self.max_batch)
        v = 1.0 - self._rng.random() ** (count / free)
        if v <= share:
            return 0.0
        tau = self.window / min(-math.log(share), self.ramp)
        return tau * math.log(v / share)

    def _arm(self, when: float, t: str, hint: str | None) -> None:
        current = self._timers.get(t)
        if current is None or when < current[0]:
            self._timers[t] = (when, hint)
            if self._wake is None or when < self._wake:
                self._wake = when

    def _rewake(self) -> None:
        self._wake = min((when for when, _ in self._timers.values()), default=None)

    def _rearm(self, now: float, t: str) -> None:
        """Free slots left after a claim, a short answer or a drain: another suppression timer, on
        what all owners are believed to have left (a crowd may be doing the same)."""
        free = self.free(t)
        total = self._total.get(t, 0)
        if free > 0 and total > 0:
            self._arm(now + self._delay(free, total), t, None)

    def _kick(self, t: str) -> None:
        """A slot was freed by a local event (a task ended, a claim failed): claim at once with the
        probability a suppression timer has at 0, else wait for news (an announcement, a repeat).

        Not the whole timer: slots are freed all over the mesh all the time, and a timer that ends
        in a claim for sure would send the freed slots of the whole mesh at the owners believed to
        have work until their drains arrive, wasting claims in proportion to the mesh size."""
        free = self.free(t)
        total = self._total.get(t, 0)
        if free <= 0 or total <= 0:
            return
        share = total / self.crowd if self.crowd > 0 else 1.0
        count = min(free, total, self.max_batch)
        if share >= 1.0 or self._rng.random() < 1.0 - (1.0 - share) ** (free / count):
            self._arm(self._now, t, None)

    def _lost(self, now: float, t: str) -> None:
        """The owner a pending claim of ``t`` was meant for has no more: as a slot just freed."""
        del self._timers[t]
        self._kick(t)
        self._rewake()

    def _pick(self, now: float, t: str, hint: str | None) -> str | None:
        """The owner to claim from: the one whose announcement set the timer if it still qualifies,
        else one picked in proportion to its believed surplus."""
        backoff = self._backoff
        if hint is not None:
            rec = self._owners.get(hint)
            if (rec is not None and rec.surplus.get(t, 0) > 0 and now - rec.heard_at <= self.stale_after
                    and not (hint in backoff and backoff[hint][0] > now)):
                return hint
        if self._total.get(t, 0) <= 0:
            return None
        owners: list[str] = []
        weights: list[int] = []
        limit = now - self.stale_after
        for owner, rec in self._owners.items():
            n = rec.surplus.get(t, 0)
            if n and rec.heard_at >= limit and not (owner in backoff and backoff[owner][0] > now):
                owners.append(owner)
                weights.append(n)
        if len(owners) <= 1:
            return owners[0] if owners else None
        return self._rng.choices(owners, weights)[0]

    # -- beliefs and slots --------------------------------------------------------------------------
    def _take(self, rec: _Owner, t: str, count: int) -> None:
        """Optimistically: what we claim is no longer there for others."""
        have = rec.surplus[t]
        count = min(count, have)
        self._total[t] -= count
        if have > count:
            rec.surplus[t] = have - count
        else:
            del rec.surplus[t]

    def _reserve(self, owner: str, t: str, count: int) -> Claim:
        claim = Claim(owner, t, count)
        self._inflight[claim] = self._inflight.get(claim, 0) + 1
        self._reserved[t] += count
        self._activate(owner, count)
        return claim

    def _activate(self, owner: str, delta: int) -> None:
        n = self._active.get(owner, 0) + delta
        if n > 0:
            self._active[owner] = n
        else:
            self._active.pop(owner, None)

    def _release(self, claim: Claim) -> bool:
        """Take an answered or failed claim out of flight; False if it is not in flight."""
        n = self._inflight.get(claim, 0)
        if not n:
            return False
        if n == 1:
            del self._inflight[claim]
        else:
            self._inflight[claim] = n - 1
        self._reserved[claim.task_type] -= claim.count
        self._activate(claim.owner, -claim.count)
        return True

    def _end(self, key: tuple[str, str], running: int) -> None:
        if running == 1:
            del self._running[key]
        else:
            self._running[key] = running - 1
        self._busy[key[1]] -= 1

    def _admit(self, owner: str, seq: int, now: float) -> _Owner | None:
        """A belief for a new owner: prune stale ones if the table is full, else take the place of
        a random one we have no work of (None if four picks found none)."""
        owners, order = self._owners, self._order
        if len(owners) >= self.max_owners and now >= self._next_prune:
            self._prune(now)
        if len(owners) < self.max_owners:
            rec = owners[owner] = _Owner(seq, now)
            self._pos[owner] = len(order)
            order.append(owner)
            return rec
        for _ in range(4):
            i = int(self._rng.random() * len(order))
            old = order[i]
            if old not in self._active:
                rec = owners.pop(old)
                self._clear(rec)
                self._unhint(old)
                del self._pos[old]
                order[i] = owner
                self._pos[owner] = i
                rec.seq, rec.heard_at = seq, now
                owners[owner] = rec
                return rec
        return None

    def _drop(self, owner: str, rec: _Owner) -> None:
        """Forget a belief entirely; a claim pending on it goes to whoever is picked then."""
        self._clear(rec)
        del self._owners[owner]
        i = self._pos.pop(owner)
        last = self._order.pop()
        if last != owner:
            self._order[i] = last
            self._pos[last] = i
        self._unhint(owner)

    def _unhint(self, owner: str) -> None:
        timers = self._timers
        if timers:
            for t, (when, hint) in list(timers.items()):
                if hint == owner:
                    timers[t] = (when, None)

    def _clear(self, rec: _Owner) -> None:
        for t, n in rec.surplus.items():
            self._total[t] -= n
        rec.surplus = {}

    def _prune(self, now: float) -> None:
        """Drop beliefs not repeated within ``stale_after`` (of an owner we have work of, only the
        surplus), and backoffs long over (``backoff_cap`` after they ended)."""
        self._next_prune = now + self.stale_after / 4
        limit = now - self.stale_after
        for owner, rec in [(o, rec) for o, rec in self._owners.items() if rec.heard_at < limit]:
            if owner in self._active:
                self._clear(rec)
            else:
                self._drop(owner, rec)
        for owner in [o for o, (until, _) in self._backoff.items() if until + self.backoff_cap <= now]:
            del self._backoff[owner]
