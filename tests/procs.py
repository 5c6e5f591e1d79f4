"""Start triomcp processes for tests: bounded waits, always killed at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reliability.procs import TRIOMCP, free_port, run_cli, started, stderr_text, wait_for_announce

__all__ = ["REPO", "TRIOMCP", "env_for", "free_port", "run_cli", "started", "stderr_text", "wait_for_announce"]

REPO = Path(__file__).resolve().parents[1]


def env_for(data_dir: Path, name: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOMCP_")}
    env.update({
        "TRIOMCP_DATA_DIR": str(data_dir),
        "TRIOMCP_TEST_NODE_NAME": name,
        "PYTHONPATH": f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "TRIOMCP_P2P__LISTEN": '["/ip4/127.0.0.1/tcp/0"]',
    })
    for key, value in settings.items():
        env[f"TRIOMCP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env
