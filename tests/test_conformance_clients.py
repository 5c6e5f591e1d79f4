"""How ``python -m conformance`` turns an independent client script's run into a table row.

The scripts themselves run against a real node in ``make conformance``; this checks only the
reading of what they wrote and how they ended (:func:`conformance.independent.outcome_of`).
"""

from __future__ import annotations

import json
from pathlib import Path

from conformance.independent import CLIENT_REQUIREMENTS, CLIENTS, outcome_of
from conformance.results import Totals, render_table


def written(tmp_path: Path, steps: list[dict[str, str]]) -> Path:
    path = tmp_path / "client.json"
    path.write_text(json.dumps({"client": "c", "steps": steps}))
    return path


def test_each_step_is_a_check(tmp_path: Path) -> None:
    results = written(tmp_path, [
        {"step": "a", "status": "pass", "detail": "ok"},
        {"step": "b", "status": "fail", "detail": "expected 1, got 2"},
        {"step": "c", "status": "skip", "detail": "client bug: ..."},
        {"step": "d", "status": "pass", "detail": ""},
    ])
    outcome = outcome_of("c", results, 1, False, tmp_path / "c.log", 180)
    assert (outcome.requirements, outcome.passed, outcome.failed, outcome.skipped) == (CLIENT_REQUIREMENTS, 2, 1, 1)
    assert outcome.failures == ("b: expected 1, got 2",)
    assert outcome.note == "excluded: c (client bug: ...)"
    assert outcome.verdict == "FAIL"
    assert Totals.of([outcome]).line() == "2 passed, 1 failed, 0 warnings"
    assert "clients: 2 passed, 1 failed, 0 warnings (1 clients, 1 failing)" in render_table([outcome])


def test_all_passed_and_exit_0_passes(tmp_path: Path) -> None:
    results = written(tmp_path, [{"step": "a", "status": "pass", "detail": ""}])
    outcome = outcome_of("c", results, 0, False, tmp_path / "c.log", 180)
    assert (outcome.passed, outcome.failed, outcome.verdict) == (1, 0, "pass")


def test_a_script_without_results_is_one_failure(tmp_path: Path) -> None:
    outcome = outcome_of("c", tmp_path / "missing.json", 1, False, tmp_path / "c.log", 180)
    assert (outcome.passed, outcome.failed) == (0, 1)
    assert outcome.failures == ("(script): exited 1 without writing its results",)
    (tmp_path / "bad.json").write_text("{not json")
    timed_out = outcome_of("c", tmp_path / "bad.json", -9, True, tmp_path / "c.log", 180)
    assert timed_out.failures == ("(script): timed out after 180 s without writing its results",)


def test_a_failed_exit_with_no_failed_step_still_fails(tmp_path: Path) -> None:
    results = written(tmp_path, [{"step": "a", "status": "pass", "detail": ""}])
    outcome = outcome_of("c", results, 3, False, tmp_path / "c.log", 180)
    assert (outcome.passed, outcome.failed) == (1, 1)
    assert outcome.failures[0].startswith("(script): exited 3 although no step failed")
    timed_out = outcome_of("c", results, -9, True, tmp_path / "c.log", 180)
    assert timed_out.failures == ("(script): timed out after 180 s",)


def test_every_client_has_its_script() -> None:
    here = Path(__file__).resolve().parents[1] / "conformance" / "clients"
    assert {c.script for c in CLIENTS} <= {p.name for p in here.glob("*.mjs")}
    assert len({c.name for c in CLIENTS}) == len(CLIENTS)
