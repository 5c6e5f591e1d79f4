"""The mesh simulator (``bench/mesh_sim.py``) at 50 nodes: what must hold whatever the tuning.

It runs the real ``triomcp.taskqueue.scheduling`` classes; each run takes well under a second."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from bench.mesh_sim import Config, Result, run
from triomcp.taskqueue import scheduling

SMALL: dict[str, Any] = {"nodes": 50, "burst": 50, "duration": 20.0}


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {scenario: run(Config(scenario=scenario, **SMALL)) for scenario in ("uniform", "skewed", "churn")}


@pytest.mark.parametrize("scenario", ["uniform", "skewed", "churn"])
def test_every_task_of_a_live_owner_is_done_exactly_once(results: dict[str, Result], scenario: str) -> None:
    res = results[scenario]
    assert res.done_once
    assert res.submitted > 5000 and res.done >= res.submitted - res.lost_with_owner


def test_churn_loses_only_the_work_of_nodes_that_left() -> None:
    # Bursts of 200 so that some nodes leave with work queued; a seed where that happens.
    res = run(Config(scenario="churn", churn_fraction=0.2, seed=7, **{**SMALL, "burst": 200}))
    assert res.done_once
    assert res.requeued > 0  # leases held by nodes that left expired, and their tasks ran again
    assert res.failed_claims > 0  # claims on owners that had left failed (the planners backed off)
    assert res.lost_with_owner > 0 and res.done + res.lost_with_owner >= res.submitted


@pytest.mark.parametrize("scenario", ["uniform", "skewed", "churn"])
def test_an_idle_mesh_sends_nothing(results: dict[str, Result], scenario: str) -> None:
    res = results[scenario]
    assert res.idle_announcements == 0 and res.idle_claims == 0 and res.idle_msgs_per_node_per_min == 0


@pytest.mark.parametrize("scenario", ["uniform", "churn"])
def test_uniform_work_spreads_in_proportion_to_slots(results: dict[str, Result], scenario: str) -> None:
    res = results[scenario]
    assert res.remote_share > 0.5  # bursts far beyond local slots: most of the work runs elsewhere
    assert res.spread["min"] >= 0.5 and res.spread["max"] <= 1.5, res.spread
    assert all(0.85 <= share <= 1.15 for share in res.per_slot_by_size.values()), res.per_slot_by_size


def test_claims_are_few_and_cheap(results: dict[str, Result]) -> None:
    for res in results.values():
        assert res.claims_per_task < 1.5
        assert res.wasted_per_task < 0.3
        assert res.latency_ms["p50"] < 100


def test_the_simulation_is_deterministic() -> None:
    cfg = Config(scenario="churn", nodes=30, burst=30, duration=5.0)
    first, second = asdict(run(cfg)), asdict(run(cfg))
    first.pop("wall_s")
    second.pop("wall_s")
    assert first == second


def test_it_runs_the_real_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    heard = scheduling.ClaimPlanner.heard
    calls = 0

    def counting(self: scheduling.ClaimPlanner, now: float, ann: scheduling.Announcement) -> None:
        nonlocal calls
        calls += 1
        heard(self, now, ann)

    monkeypatch.setattr(scheduling.ClaimPlanner, "heard", counting)
    res = run(Config(nodes=20, burst=20, duration=2.0))
    assert calls == res.heard_calls > 0
    assert res.heard_calls == res.announcements * 19  # every announcement reaches every other node
