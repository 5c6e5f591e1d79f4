"""Keep the garbage collector's full collections short in a long-running process.

After startup the heap holds about 140,000 long-lived objects (modules, pydantic
and MCP schemas, libp2p, the app). Every full (generation 2) collection walks all
of them: about 70 ms on the benchmark machine, during which the Trio loop answers
nothing; under load one came every few thousand calls and set the p99/max latency.
``gc.freeze()`` moves them to a permanent generation the collector no longer walks
(a full collection then takes well under 1 ms); objects created later are collected
as before, and frozen ones are still freed by reference counting.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> int:
    """Collect once, then freeze what survived startup; returns how many objects were frozen.

    Call once per process, when startup is over (a served process, not a test run of the app).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
