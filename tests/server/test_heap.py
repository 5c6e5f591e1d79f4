"""settle_heap: startup objects leave the collector's full passes (run in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, tempfile
from triomcp.server.app import create_app
from triomcp.server.heap import settle_heap
from triomcp.settings import Settings
app = create_app(Settings(data_dir=tempfile.mkdtemp()))
gc.collect()
frozen = settle_heap()
print(frozen, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_settle_heap_freezes_what_startup_allocated() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    frozen, freeze_count, still_tracked = out.stdout.split()
    assert int(frozen) == int(freeze_count) > 50_000  # the app's modules and schemas
    assert int(still_tracked) < 1_000  # what a full collection still walks
