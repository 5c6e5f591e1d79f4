"""Start triomcp processes for tests: bounded waits, always killed at the end (see :mod:`harness.procs`).

The tests' own names for the harness's process helpers; new code may import ``harness.procs``.
"""

from __future__ import annotations

from harness.procs import REPO, TRIOMCP, env_for, free_port, run_cli, started, stderr_text, wait_for_announce

__all__ = ["REPO", "TRIOMCP", "env_for", "free_port", "run_cli", "started", "stderr_text", "wait_for_announce"]
