"""Admission of MCP calls over HTTP: a bounded number in flight, a bounded share per principal.

Every MCP request that runs a handler (a :class:`~triomcp.mcp.outcomes.Call`: ``tools/call``,
``resources/read``, ``prompts/get``, ...) takes a slot before it runs and gives it back when it
ends: answered, failed, cancelled, or its client gone (a modern-era disconnect cancels the
handler, which gives the slot back). When no slot is free the call waits for one, at most
``wait`` seconds and behind at most ``capacity`` others (first come, first served); then it is
refused at once: the endpoint answers 503 with ``Retry-After`` and a JSON-RPC error ``-32010``,
the code libp2p answers for the same condition. So past capacity a client learns it within the
wait, not after a queue it cannot see.

Fairness: a principal (the authenticated principal; with authorization off, the client's address,
an IPv6 client's /64) may take any free slot but the last ``per_principal`` ones, which are kept
for principals holding fewer than ``per_principal`` (waiting ones included). A principal holding
its share or more is refused without waiting once only that reserve is left. So a lone client
may use most of an idle node, while a flood from one client or token, however long its calls,
always leaves ``per_principal`` slots to everyone else; and only principals below their share
ever wait.

Never counted and never refused: the outcome tools of a running task (:data:`NEVER_REFUSED`:
renewing a lease, reporting progress, completing, failing, releasing, suspending), since finishing
work is how load goes down; nor anything that is not a call (health, readiness, metrics, session
set-up, lists: answered without a handler; listen and GET streams: long-lived, they would hold a
slot for as long as they stay open).

The check on the hot path is a few integer comparisons and one dict update; waiting costs a
:class:`trio.Event` only when the node is full.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import trio

from triomcp.errors import Overloaded
from triomcp.server.tools.taskqueue import (
    taskqueue_complete,
    taskqueue_fail,
    taskqueue_progress,
    taskqueue_release,
    taskqueue_renew,
    taskqueue_suspend,
)

__all__ = ["NEVER_REFUSED", "RETRY_AFTER_SECONDS", "Admission", "AdmissionStatistics", "Refusal", "principal_key"]

NEVER_REFUSED = frozenset(fn.__name__ for fn in (
    taskqueue_renew, taskqueue_progress, taskqueue_complete, taskqueue_fail, taskqueue_release, taskqueue_suspend))
"""Tools a worker calls about a task it already holds: never counted, never refused."""

RETRY_AFTER_SECONDS = 1
"""The ``Retry-After`` of a refusal: calls end in milliseconds here, so a second is plenty."""

Reason = Literal["capacity", "principal"]


_MESSAGES = {
    "capacity": "Server overloaded: {limit} MCP calls are in flight (http.max_calls_in_flight); retry after {retry} s",
    "principal": "Too many calls in flight for this {who}: {limit} (http.max_calls_in_flight_per_principal); "
                 "retry after {retry} s",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was refused, and what the limit was."""

    reason: Reason
    limit: int

    def error(self, *, who: str = "client", **data: Any) -> Overloaded:
        """The -32010 error saying so (to an HTTP client, or with ``who="peer"`` to a peer; ``data``
        adds to the error's ``reason`` and ``limit``)."""
        message = _MESSAGES[self.reason].format(limit=self.limit, retry=RETRY_AFTER_SECONDS, who=who)
        return Overloaded(message, data={"reason": self.reason, "limit": self.limit, **data})


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    in_flight: int
    """Calls holding a slot now."""
    waiting: int
    """Calls waiting for a slot now."""
    principals: int
    """Principals holding or waiting for a slot now."""
    admitted: int
    """Calls admitted since start (at once or after waiting)."""
    waited: int
    """Of those, calls that waited for a slot first."""
    refused_capacity: int
    """Calls refused because no slot freed within the wait (or the queue of waiters was full)."""
    refused_principal: int
    """Calls refused because their principal held its whole share."""


class _Waiter:
    __slots__ = ("event", "gone", "granted", "principal")

    def __init__(self, principal: str) -> None:
        self.principal = principal
        self.event = trio.Event()
        self.granted = False
        self.gone = False


class Admission:
    """At most ``capacity`` calls in flight, at most ``per_principal`` per principal (see the module)."""

    def __init__(self, capacity: int, per_principal: int, wait: float) -> None:
        self.capacity = capacity
        self.per_principal = per_principal
        self.wait = wait
        self.in_flight = 0
        self._held: dict[str, int] = {}
        """Slots per principal, held or waited for."""
        self._waiters: deque[_Waiter] = deque()
        self._waiting = 0
        """Waiters in ``_waiters`` still waiting (those that gave up are skipped when reached)."""
        self._full = Refusal("capacity", capacity)
        self._over_share = Refusal("principal", per_principal)
        self._admitted = self._waited = self._refused_capacity = self._refused_principal = 0

    def _try(self, principal: str) -> Refusal | None:
        held = self._held.get(principal, 0)
        free = self.capacity - self.in_flight
        # Waiters first (no jumping the queue); the last `per_principal` free slots only for a
        # principal holding less than that.
        if not self._waiting and free > 0 and (held < self.per_principal or free > self.per_principal):
            self.in_flight += 1
            self._held[principal] = held + 1
            self._admitted += 1
            return None
        return self._full if held < self.per_principal else self._over_share

    def _refused(self, refusal: Refusal) -> Refusal:
        if refusal is self._full:
            self._refused_capacity += 1
        else:
            self._refused_principal += 1
        return refusal

    def enter_nowait(self, principal: str) -> Refusal | None:
        """Take a slot for ``principal`` if one is free (None), else say why not. O(1)."""
        refusal = self._try(principal)
        return None if refusal is None else self._refused(refusal)

    async def enter(self, principal: str) -> Refusal | None:
        """Take a slot, waiting up to ``wait`` seconds for one: None once it is held, else why not.

        A principal at its share, and any call when ``capacity`` others already wait, are refused
        without waiting. Only a full node costs a checkpoint here."""
        refusal = self._try(principal)
        if refusal is None:
            return None
        if refusal is self._over_share or self.wait <= 0 or self._waiting >= self.capacity:
            return self._refused(refusal)
        waiter = _Waiter(principal)
        self._held[principal] = self._held.get(principal, 0) + 1
        self._waiters.append(waiter)
        self._waiting += 1
        returned = False
        try:
            with trio.move_on_after(self.wait):
                await waiter.event.wait()
            returned = True
        finally:
            if not waiter.granted:  # gave up, or was cancelled: skipped when reached
                waiter.gone = True
                self._waiting -= 1
                self._forget(principal)
                if len(self._waiters) > 2 * self._waiting + 16:
                    self._waiters = deque(w for w in self._waiters if not w.gone)
            elif not returned:  # granted, then cancelled before it could run: give the slot on
                self.leave(principal)
        if waiter.granted:
            self._waited += 1
            return None
        return self._refused(refusal)

    def leave(self, principal: str) -> None:
        """Give a slot back: to the first call still waiting, if any, else to the pool."""
        self._forget(principal)
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.gone:
                continue
            waiter.granted = True
            waiter.event.set()
            self._waiting -= 1
            self._admitted += 1
            return  # the slot passes to the waiter: in_flight is unchanged
        self.in_flight -= 1

    def _forget(self, principal: str) -> None:
        held = self._held[principal] - 1
        if held:
            self._held[principal] = held
        else:
            del self._held[principal]

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            in_flight=self.in_flight, waiting=self._waiting, principals=len(self._held), admitted=self._admitted,
            waited=self._waited, refused_capacity=self._refused_capacity, refused_principal=self._refused_principal)


def principal_key(scope: Mapping[str, Any]) -> str:
    """Whose share a request spends: its authenticated principal, else its client's address
    (an IPv6 client's /64, as a host owns the whole prefix), else one shared ``anonymous``."""
    principal = scope.get("triomcp.principal")
    if principal is not None:
        return f"principal:{principal}"
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        return "anonymous"  # a unix socket: every client looks the same
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"address:{host}"
        mapped = address.ipv4_mapped
        if mapped is not None:
            return f"address:{mapped}"
        return f"address:{ipaddress.IPv6Network((address, 64), strict=False).network_address}/64"
    return f"address:{host}"
