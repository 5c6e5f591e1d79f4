"""How the benchmarks order their measurements and summarise repetitions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["rotated", "summary"]

T = TypeVar("T")


def summary(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of the repetitions."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """``items`` starting at a different one each repetition, so no design always goes first."""
    k = rep % len(items)
    return [*items[k:], *items[:k]]
