"""Admission before the HTTP layer: a bounded number of requests in progress, refused in milliseconds.

Why (measured, docs/reliability.md "Refusing before the HTTP layer"): under a flood every
connection with a request in flight is served round-robin by the one Trio loop, and most of a
trivial call's ~1.1 ms of CPU is Hypercorn's HTTP/1.1 handling, the ASGI hops and the
middlewares, all paid before the call-level admission control (:mod:`triomcp.server.admission`)
can run. So a refusal from there costs about what a served call costs and arrives as late: at
800 flooding connections refusals took 880 ms (p50), served calls 1.0 s. A request waiting for
its turn is runnable and slows everyone; one waiting on an event is not.

:class:`RequestGate` counts **requests in progress**: from the first bytes of a request read on
an idle connection to the first bytes of its response written.

- At most ``capacity`` are in progress, so at most that many share the loop and their latency
  stays what it is below capacity. A new one waits for a slot (on an event) at most ``wait``
  seconds, then gets a fixed ``503`` with ``Retry-After`` and JSON-RPC error ``-32010``, written
  to the socket before Hypercorn parses anything.
- When the refused request can be skipped whole (:func:`request_extent`: its head read, a small
  ``content-length`` body) the connection stays open; otherwise it is closed. Reconnecting costs
  the server about what a served call does: closing after each refusal made refusals as slow as
  served calls.
- A kept connection is not read again for ``pause`` seconds (``http.refusal_pause``, the
  ``Retry-After``). A client that sends its next request at once (wrk does) was otherwise refused
  thousands of times a second, and those refusals, at ~0.2 ms each, took the loop from the calls
  being served: at 800 flooding connections served calls took 530-730 ms with no pause, 90-120 ms
  with a 1 s pause.
- A request holding its slot ``park_after`` seconds without an answer is waiting on something (a
  slow tool, a peer, a client trickling its body), not using the loop: it is *parked* (its slot
  freed, the request untouched), so long calls and slow clients cannot take every slot. A
  streamed response (SSE, a GET or listen stream) frees its slot with its head.
- Fairness per client address (an IPv6 client's /64), as in the call-level admission: an address
  may take any free slot but the last ``per_address``.

Never gated: an HTTP/2 connection's later requests (the connection is not idle), ``GET``/``HEAD``
of ``/healthz``, ``/readyz`` and ``/metrics``, and a request whose first bytes name a task's
outcome tool (``taskqueue_renew``, ``_complete``, ...: finishing work is how load goes down).
That last test is on bytes, so any request naming such a tool passes; it then meets the
call-level admission control as every call does.

:class:`~triomcp.server.serving.GatedTCPServer` puts the gate in front of Hypercorn's protocol.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

import trio

from triomcp.server.admission import NEVER_REFUSED, RETRY_AFTER_SECONDS, Admission

__all__ = ["MAX_SKIPPED_BODY", "RequestGate", "RequestGateStatistics", "never_gated", "one_whole_request",
           "refusal_response", "request_extent"]

_NEVER_GATED_LINES = tuple(f"{method} {path}{end}".encode() for method in ("GET", "HEAD")
                           for path in ("/healthz", "/readyz", "/metrics") for end in (" ", "?"))
_OUTCOME_TOOLS = tuple(name.encode() for name in sorted(NEVER_REFUSED))
_OUTCOME_PREFIX: bytes = os.path.commonprefix(_OUTCOME_TOOLS) or b""  # noqa: RUF071 (characters are what is meant)
"""What every outcome tool's name starts with (``taskqueue_``): one scan of a request that names none."""


def refusal_response(capacity: int, *, close: bool = True) -> bytes:
    """The fixed answer of a refused request: 503, ``Retry-After``, a JSON-RPC error -32010; with
    ``close`` it says the connection closes after it."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32010,
        "message": f"Server overloaded: {capacity} requests are in progress (http.max_requests_in_progress); "
                   f"retry after {RETRY_AFTER_SECONDS} s",
        "data": {"reason": "requests", "limit": capacity}}}, separators=(",", ":")).encode()
    connection = "connection: close\r\n" if close else ""
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"retry-after: {RETRY_AFTER_SECONDS}\r\ncontent-length: {len(body)}\r\n{connection}\r\n")
    return head.encode() + body


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*(?=\r\n)", re.IGNORECASE)
_KEEPS_OPEN_NOT = re.compile(rb"\r\n(?:transfer-encoding|connection:[ \t]*close|upgrade|expect)", re.IGNORECASE)


MAX_SKIPPED_BODY = 64 * 1024
"""The largest body a refusal reads to the end (and skips) to keep the connection."""


def request_extent(data: bytes) -> int | None:
    """The length of the HTTP/1.1 request ``data`` begins, if a refusal may skip it and keep the
    connection: its head is complete and has at most one ``content-length`` (at most
    :data:`MAX_SKIPPED_BODY`), and no chunked body, ``connection: close``, upgrade or ``expect``.
    None otherwise (the connection is then closed after the refusal)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end + 2]
    line_end = head.find(b"\r\n")
    if not head[:line_end].endswith(b" HTTP/1.1") or _KEEPS_OPEN_NOT.search(head):
        return None
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) > 1 or (lengths and int(lengths[0]) > MAX_SKIPPED_BODY):
        return None
    return end + 4 + (int(lengths[0]) if lengths else 0)


def one_whole_request(data: bytes) -> bool:
    """Whether ``data`` is exactly one request a refusal may skip (see :func:`request_extent`)."""
    return request_extent(data) == len(data)


def never_gated(data: bytes) -> bool:
    """Health, readiness and metrics requests, and requests naming a task's outcome tool."""
    return data.startswith(_NEVER_GATED_LINES) or (
        _OUTCOME_PREFIX in data and any(name in data for name in _OUTCOME_TOOLS))


@dataclass(frozen=True, slots=True)
class RequestGateStatistics:
    capacity: int
    in_progress: int
    """Requests holding a slot now."""
    waiting: int
    """Requests waiting for a slot now."""
    admitted: int
    """Requests admitted since start (at once or after waiting)."""
    waited: int
    """Of those, requests that waited for a slot first."""
    refused: int
    """Requests refused with the fixed 503 (no slot within the wait, or their address over its share)."""
    parked: int
    """Requests whose slot was freed because they held it ``park_after`` seconds without an answer."""


class RequestGate:
    """At most ``capacity`` HTTP requests in progress (see the module). Not thread-safe; one per server."""

    def __init__(self, capacity: int, per_address: int, wait: float, park_after: float, pause: float = 0.0) -> None:
        self.capacity = capacity
        self.park_after = park_after
        self.pause = pause
        """Seconds a connection that was refused (and kept) is not read."""
        self._slots = Admission(capacity, min(per_address, capacity), wait)
        self._holders: OrderedDict[int, tuple[str, float]] = OrderedDict()
        """Slot holders, oldest first: token -> (address key, when admitted)."""
        self._tokens = 0
        self._parked = 0
        self._refused = 0
        self.refusal = refusal_response(capacity)
        """The refusal that closes the connection."""
        self.refusal_keeping = refusal_response(capacity, close=False)
        """The refusal that keeps it (the refused request was read whole)."""

    async def enter(self, address: str) -> int | None:
        """A token once a slot is held (waiting at most ``wait``), or None: refuse the request."""
        self._park_overdue()
        refusal = await self._slots.enter(address)
        if refusal is not None and self._park_overdue():
            refusal = self._slots.enter_nowait(address)
        if refusal is not None:
            self._refused += 1
            return None
        self._tokens += 1
        self._holders[self._tokens] = (address, trio.current_time())
        return self._tokens

    def leave(self, token: int) -> None:
        """The request answered (or its connection ended): its slot goes to the next waiter. A
        parked request's token is already gone: nothing happens."""
        held = self._holders.pop(token, None)
        if held is not None:
            self._slots.leave(held[0])

    def _park_overdue(self) -> bool:
        """Free the slots held longer than ``park_after``; True if any was."""
        if not self._holders:
            return False
        horizon = trio.current_time() - self.park_after
        parked = False
        while self._holders:
            token, (address, since) = next(iter(self._holders.items()))
            if since > horizon:
                break
            del self._holders[token]
            self._slots.leave(address)
            self._parked += 1
            parked = True
        return parked

    def statistics(self) -> RequestGateStatistics:
        slots = self._slots.statistics()
        return RequestGateStatistics(capacity=self.capacity, in_progress=slots.in_flight, waiting=slots.waiting,
                                     admitted=slots.admitted, waited=slots.waited, refused=self._refused,
                                     parked=self._parked)
