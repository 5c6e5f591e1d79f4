"""The services the lifespan starts, shared with every request through ``app.state``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio

from triomcp.mcp.engine import Engine
from triomcp.settings import Settings

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    engine: Engine
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    stopping: trio.Event = field(default_factory=trio.Event)
    """Set when the node begins to drain: long-lived streams end, readiness turns false."""
    node: Any = None
    queue: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def uptime(self) -> float:
        return time.time() - self.started_at
