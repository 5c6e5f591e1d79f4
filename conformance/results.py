"""Reading the suite's results (one ``checks.json`` per scenario) and printing them as one table."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "Totals", "read_outcomes", "render_table"]

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True)
class Outcome:
    """One scenario under one requirement set."""

    requirements: str
    scenario: str
    passed: int
    failed: int
    warnings: int
    skipped: int
    note: str = ""
    """Why the scenario is not scored (``extension``, ``pending``), or what went wrong."""
    failures: tuple[str, ...] = ()
    """``check id: message`` of each failed check."""

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAIL"
        return "warn" if self.warnings else "pass"


@dataclass(frozen=True)
class Totals:
    passed: int
    failed: int
    warnings: int

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Totals:
        items = list(outcomes)
        return cls(sum(o.passed for o in items), sum(o.failed for o in items), sum(o.warnings for o in items))

    def line(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.warnings} warnings"


def _checks(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


def read_outcomes(requirements: str, out_dir: Path, ran: list[str], not_scored: dict[str, str]) -> list[Outcome]:
    """Every scenario the suite said it ran, from its ``checks.json``; a scenario without one failed."""
    found: dict[str, Path] = {}
    for entry in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        match = _RESULT_DIR.match(entry.name)
        if match and (entry / "checks.json").is_file():
            found[match["scenario"]] = entry / "checks.json"
    outcomes = []
    for scenario in dict.fromkeys([*ran, *found]):
        note = not_scored.get(scenario, "")
        path = found.get(scenario)
        if path is None:
            outcomes.append(Outcome(requirements, scenario, 0, 1, 0, 0, note or "no checks.json (the suite crashed?)",
                                    ("results: the suite wrote no checks.json for this scenario",)))
            continue
        checks = _checks(path)
        status = [str(c.get("status")) for c in checks]
        failures = tuple(f"{c.get('id')}: {c.get('errorMessage') or c.get('description') or ''}"
                         for c in checks if c.get("status") == "FAILURE")
        outcomes.append(Outcome(requirements, scenario, status.count("SUCCESS"), status.count("FAILURE"),
                                status.count("WARNING"), status.count("SKIPPED"), note, failures))
    return outcomes


def render_table(outcomes: list[Outcome]) -> str:
    """One row per scenario and requirement set, then a subtotal per set."""
    width = max([len(o.scenario) for o in outcomes] + [8])
    head = f"{'requirements':<12}  {'scenario':<{width}}  {'pass':>4}  {'fail':>4}  {'warn':>4}  result  note"
    lines = [head, "-" * len(head)]
    for o in outcomes:
        note = "; ".join(n for n in (o.note, f"{o.skipped} skipped" if o.skipped else "") if n)
        lines.append(f"{o.requirements:<12}  {o.scenario:<{width}}  {o.passed:>4}  {o.failed:>4}  {o.warnings:>4}  "
                     f"{o.verdict:<6}  {note}".rstrip())
    lines.append("")
    for requirements in dict.fromkeys(o.requirements for o in outcomes):
        mine = [o for o in outcomes if o.requirements == requirements]
        failing = sum(1 for o in mine if o.failed)
        rows = "clients" if requirements == "clients" else "scenarios"
        lines.append(f"{requirements}: {Totals.of(mine).line()} ({len(mine)} {rows}, {failing} failing)")
    return "\n".join(lines)
