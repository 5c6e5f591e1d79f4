"""Prometheus metrics (prometheus-client), one registry per app, served at ``/metrics``.

Counters the code bumps as things happen (HTTP requests, tool calls with latency) live here;
figures other parts already keep (sessions, queue states, lease expiries, peers, dial and
frame errors, auth refusals) are read when Prometheus scrapes, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from triomcp.server.services import Services

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StateCollector(Collector):
    """Figures read from the services at scrape time."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """Every gauge read from the services at scrape time. Long (about 70 lines) but flat: one
        family after another, in the order /metrics shows them; splitting it per service would
        only move the list."""
        s = self.services
        sessions = GaugeMetricFamily("triomcp_mcp_sessions_open", "Open legacy-era MCP sessions.")
        sessions.add_metric([], len(s.engine.sessions))
        yield sessions
        inflight = GaugeMetricFamily("triomcp_mcp_requests_in_flight", "MCP requests being handled now.")
        inflight.add_metric([], s.engine.statistics().inflight_calls)
        yield inflight
        if s.queue is not None:
            stats = s.queue.statistics()
            tasks = GaugeMetricFamily("triomcp_tasks", "Tasks in this node's queue by state.", labels=["state"])
            for state in ("queued", "leased", "succeeded", "failed", "cancelled", "dead"):
                tasks.add_metric([state], stats.by_state.get(state, 0))
            yield tasks
            for name, value, doc in (
                ("triomcp_tasks_submitted", stats.submitted, "Tasks accepted by this node."),
                ("triomcp_task_lease_expiries", stats.lease_expiries, "Leases that expired (holder gone)."),
                ("triomcp_task_retries", stats.retries, "Failed attempts sent back to the queue."),
                ("triomcp_task_dead_letters", stats.dead_letters, "Tasks that ran out of attempts."),
            ):
                counter = CounterMetricFamily(name, doc)
                counter.add_metric([], value)
                yield counter
        if s.node is not None:
            node = s.node.statistics()
            peers = GaugeMetricFamily("triomcp_p2p_connected_peers", "Peers with an open libp2p connection.")
            peers.add_metric([], node.connected_peers)
            yield peers
            pending = GaugeMetricFamily("triomcp_p2p_inbound_unauthenticated",
                                        "Inbound libp2p connections now between accept and authentication.")
            pending.add_metric([], node.inbound_unauthenticated)
            yield pending
            for name, value, doc in (
                ("triomcp_p2p_dial_failures", node.dial_failures, "Dials that failed or timed out."),
                ("triomcp_p2p_frame_errors", node.frame_errors, "Malformed or oversized frames received."),
                ("triomcp_p2p_calls_served", node.calls_served, "MCP requests served to peers."),
                ("triomcp_p2p_inbound_refused", node.inbound_refused,
                 "Inbound libp2p connections refused by p2p.max_unauthenticated_* before authentication."),
            ):
                counter = CounterMetricFamily(name, doc)
                counter.add_metric([], value)
                yield counter
            yield from _relay_metrics(s.node)
        admission = s.admission
        if admission is not None:
            seen = admission.statistics()
            for name, value, doc in (
                ("triomcp_http_calls_in_flight", seen.in_flight, "MCP calls over HTTP holding an admission slot."),
                ("triomcp_http_calls_waiting", seen.waiting, "MCP calls over HTTP waiting for an admission slot."),
            ):
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], value)
                yield gauge
            admitted = CounterMetricFamily("triomcp_http_calls_admitted",
                                           "MCP calls over HTTP admitted, by whether they waited for a slot.",
                                           labels=["waited"])
            admitted.add_metric(["false"], seen.admitted - seen.waited)
            admitted.add_metric(["true"], seen.waited)
            yield admitted
            refused = CounterMetricFamily("triomcp_http_calls_refused",
                                          "MCP calls over HTTP refused with 503 (capacity: no slot freed within "
                                          "http.admission_wait; principal: over its share).", labels=["reason"])
            refused.add_metric(["capacity"], seen.refused_capacity)
            refused.add_metric(["principal"], seen.refused_principal)
            yield refused
        gate = s.request_gate
        if gate is not None:
            held = gate.statistics()
            for name, value, doc in (
                ("triomcp_http_requests_in_progress", held.in_progress,
                 "HTTP requests holding an http.max_requests_in_progress slot."),
                ("triomcp_http_requests_waiting", held.waiting, "HTTP requests waiting for a slot."),
            ):
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], value)
                yield gauge
            for name, value, doc in (
                ("triomcp_http_requests_admitted", held.admitted, "HTTP requests admitted by the request gate."),
                ("triomcp_http_requests_refused", held.refused,
                 "HTTP requests refused with 503 before parsing (http.max_requests_in_progress)."),
                ("triomcp_http_requests_parked", held.parked,
                 "HTTP requests that stopped counting after http.request_park_after without an answer."),
            ):
                counter = CounterMetricFamily(name, doc)
                counter.add_metric([], value)
                yield counter
        auth = s.auth
        if auth is not None and auth.enabled:
            refused = CounterMetricFamily("triomcp_auth_refusals", "HTTP requests refused by authorization.",
                                          labels=["reason"])
            for reason, count in sorted(auth.failures.items()):
                refused.add_metric([reason], count)
            yield refused


def _relay_metrics(node: Any) -> Iterator[Metric]:
    """Reachability, circuit relay, hole punching and the moves to direct connections
    (``p2p/reachability.py``, ``circuit.py``, ``reservations.py``, ``holepunch.py``, ``direct.py``);
    none for a node without them (a fake in tests)."""
    if not all(hasattr(node, a) for a in ("reachability", "circuits", "hole_punch", "reservations", "to_direct")):
        return
    reach = GaugeMetricFamily("triomcp_p2p_reachability",
                              "1 for this node's reachability state (unknown, public, private), 0 for the others.",
                              labels=["state"])
    state = node.reachability.state
    for name in ("unknown", "public", "private"):
        reach.add_metric([name], 1 if state == name else 0)
    yield reach
    service = node.circuits.statistics()
    own = node.reservations.statistics() if node.reservations is not None else []
    relayed = sum(1 for p in node.connected_peers() for c in node.connections_to(p) if c["kind"] == "relayed")
    punch = node.hole_punch.statistics()
    for name, value, doc in (
        ("triomcp_p2p_relay_reservations_held", sum(1 for r in own if r["state"] == "reserved"),
         "Reservations this node holds now on its relays."),
        ("triomcp_p2p_relay_reservations_served", len(service.reservations),
         "Reservations peers hold now on this node (p2p.relay.service)."),
        ("triomcp_p2p_relay_circuits_carried", service.hop_streams,
         "HOP streams open now on this relay: relayed connections carried, reservations being answered."),
        ("triomcp_p2p_relayed_connections", relayed, "This node's open connections that run through a relay."),
    ):
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], value)
        yield gauge
    reach_stats = node.reachability.statistics()
    refusals = CounterMetricFamily("triomcp_p2p_relay_refusals",
                                   "Refused since start, by what: hop (circuit relay to an unauthorized peer), "
                                   "stop (a relayed connection through a relay this node does not use), "
                                   "dcutr (a hole punch from an unauthorized peer), dialback (a reachability "
                                   "request refused).", labels=["what"])
    for what, value in (("hop", service.hop_refused), ("stop", service.stop_refused), ("dcutr", punch.refused),
                        ("dialback", reach_stats.refused)):
        refusals.add_metric([what], value)
    yield refusals
    punches = CounterMetricFamily("triomcp_p2p_hole_punches", "Hole punches this node began, by outcome.",
                                  labels=["outcome"])
    punches.add_metric(["direct"], punch.upgraded)
    punches.add_metric(["relayed"], punch.failed)
    yield punches
    moved = node.to_direct.statistics()
    to_direct = CounterMetricFamily("triomcp_p2p_relayed_connections_to_direct",
                                    "Relayed connections closed after a direct one to their peer appeared, by "
                                    "outcome: closed (once unused), cut (at p2p.call_timeout, streams still "
                                    "open).", labels=["outcome"])
    to_direct.add_metric(["closed"], moved.closed)
    to_direct.add_metric(["cut"], moved.cut)
    yield to_direct


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "triomcp_http_requests", "HTTP requests answered, by method and status.", ["method", "status"],
            registry=self.registry)
        self.tool_calls = Counter(
            "triomcp_mcp_tool_calls", "MCP tool calls, by tool, era and outcome.", ["tool", "era", "outcome"],
            registry=self.registry)
        self.tool_seconds = Histogram(
            "triomcp_mcp_tool_call_seconds", "MCP tool call latency in seconds, by tool and era.", ["tool", "era"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        # The labelled children, by label values: ``labels()`` checks its arguments and takes a lock
        # on every call (about 2 us each, three times in a trivial tool call).
        self._http: dict[tuple[str, int], Any] = {}
        self._tools: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def count_http_request(self, method: str, status: int) -> None:
        child = self._http.get((method, status))
        if child is None:
            child = self._http[(method, status)] = self.http_requests.labels(method, str(status))
        child.inc()

    def watch(self, services: Services) -> None:
        self.registry.register(_StateCollector(services))

    def observe_tool_call(self, tool: str, era: str, outcome: str, seconds: float) -> None:
        children = self._tools.get((tool, era, outcome))
        if children is None:
            children = self._tools[(tool, era, outcome)] = (self.tool_calls.labels(tool, era, outcome),
                                                            self.tool_seconds.labels(tool, era))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> Any:
        """One current value (tests, ``server_status``)."""
        return self.registry.get_sample_value(name, labels or {})
