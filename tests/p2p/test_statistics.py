"""The node's statistics as Prometheus sees them."""

from __future__ import annotations

from types import SimpleNamespace

from triomcp.p2p import NodeStatistics
from triomcp.server.metrics import Metrics


def test_the_admission_gate_is_exported_as_metrics() -> None:
    """``inbound_unauthenticated`` (a gauge: now) and ``inbound_refused`` (a counter) reach /metrics."""
    class Only(SimpleNamespace):
        """The engine and the node; every other service absent."""

        def __getattr__(self, name: str) -> None:
            return None

    stats = NodeStatistics("12D3KooWMe", 2, 0, 0, 0, inbound_unauthenticated=3, inbound_refused=41)
    services = Only(engine=SimpleNamespace(sessions={}, statistics=lambda: SimpleNamespace(inflight_calls=0)),
                    node=SimpleNamespace(statistics=lambda: stats))
    metrics = Metrics()
    metrics.watch(services)  # type: ignore[arg-type]
    assert metrics.sample("triomcp_p2p_inbound_unauthenticated") == 3
    assert metrics.sample("triomcp_p2p_inbound_refused_total") == 41
    assert b"# TYPE triomcp_p2p_inbound_unauthenticated gauge" in metrics.render()
