"""The owning node SIGKILLed right after acknowledging submits: restarted, every task is there and runs once."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability import faults

pytestmark = pytest.mark.slow


def test_acknowledged_tasks_survive_a_sigkill_and_run_once(tmp_path: Path) -> None:
    out = faults.owner_killed_after_ack(tmp_path, 20)
    assert out["faults"] == 1
    assert out["acknowledged"] > 0 and out["acknowledged"] == out["submitted"]
    assert out["present_after_restart"] == out["acknowledged"]
    assert out["lost"] == 0
    assert out["handler_starts"] == out["acknowledged"]  # none ran before the kill, each ran after it
    assert out["completed_more_than_once"] == 0 and out["single_outcome"]
