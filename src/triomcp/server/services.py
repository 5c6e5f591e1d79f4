"""The services the lifespan starts, shared with every request through ``app.state``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio

from triomcp.errors import ToolError
from triomcp.mcp.engine import Engine
from triomcp.server.cache import TtlCache
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
    """The libp2p node (``triomcp.p2p.Node``) once started, when p2p is enabled."""
    queue: Any = None
    """The task queue (``triomcp.taskqueue.TaskQueue``) once opened, when enabled."""
    cache: TtlCache = field(default_factory=TtlCache)
    metrics: Any = None
    """``triomcp.server.metrics.Metrics``: the app's Prometheus registry."""
    auth: Any = None
    """``triomcp.server.auth.Authenticator``."""
    extras: dict[str, Any] = field(default_factory=dict)

    def uptime(self) -> float:
        return time.time() - self.started_at

    def require_node(self) -> Any:
        if self.node is None:
            raise ToolError("the P2P node is not running on this server (p2p.enabled = false)", code="p2p_disabled")
        return self.node

    def require_queue(self) -> Any:
        if self.queue is None:
            raise ToolError("the task queue is not running on this server (taskqueue.enabled = false)",
                            code="taskqueue_disabled")
        return self.queue
