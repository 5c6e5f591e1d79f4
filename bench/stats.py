"""How the benchmarks order their measurements and summarise repetitions, and their one option."""

from __future__ import annotations

import argparse
import shutil
import statistics
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["quick_run", "rotated", "summary"]


def quick_run(doc: str | None, argv: list[str] | None, *, quick: str) -> bool:
    """Parse a benchmark's command line (``--quick``: ``quick`` says what it shortens); needs wrk."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (Debian: apt-get install -y wrk)")
    return bool(args.quick)

T = TypeVar("T")


def summary(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of the repetitions."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """``items`` starting at a different one each repetition, so no design always goes first."""
    k = rep % len(items)
    return [*items[k:], *items[:k]]
