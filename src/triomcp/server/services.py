"""The services the lifespan starts, shared with every request through ``app.state``.

Tools reach them with :func:`services_of` (the engine hands them over as ``ctx.app_state``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from triomcp.errors import ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.engine import Engine
from triomcp.server.auth import Authenticator
from triomcp.server.cache import TtlCache
from triomcp.server.metrics import Metrics
from triomcp.server.seams import MeshNode, WorkQueue
from triomcp.settings import Settings

if TYPE_CHECKING:  # admission names the task tools, which import this module
    from libp2p.crypto.keys import KeyPair

    from triomcp.server.admission import Admission
    from triomcp.server.http_gate import RequestGate
    from triomcp.server.relay import Relay

__all__ = ["Services", "services_of"]


@dataclass
class Services:
    settings: Settings
    engine: Engine = field(init=False)
    """Set once built: the engine's hooks name these services, so it comes second."""
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    stopping: trio.Event = field(default_factory=trio.Event)
    """Set when the node begins to drain: long-lived streams end, readiness turns false."""
    key_pair: KeyPair | None = None
    """The node's identity, read once by ``build_services`` (embedded p2p only): the owner tag of
    the engine's ids comes from it, and the lifespan starts the libp2p node with it."""
    node: MeshNode | None = None
    """The libp2p node (``triomcp.p2p.Node``) once started, when p2p is enabled."""
    queue: WorkQueue | None = None
    """The task queue (``triomcp.taskqueue.TaskQueue``) once opened, when enabled."""
    cache: TtlCache = field(default_factory=TtlCache)
    metrics: Metrics = field(default_factory=Metrics)
    """The app's Prometheus registry."""
    auth: Authenticator = field(init=False)
    """Who may call what over HTTP (``settings.auth``; it lets everyone in when auth is off)."""
    admission: Admission | None = None
    """How many MCP calls may run over HTTP, and how many per principal (set by the HTTP app)."""
    request_gate: RequestGate | None = None
    """How many HTTP requests may be in progress before their response begins (set by the HTTP
    app; the server applies it: ``triomcp serve``, or ``serving.serve(..., gate=...)``)."""
    http_app: Any = None
    """The HTTP app (ASGI), served to authorized peers over HTTP/1.1 over libp2p (set by the app)."""
    relay: Relay | None = None
    """Serves requests naming another node's sessions and tasks on that node (set by the HTTP app)."""
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.settings.auth, self.settings.data_dir)

    def uptime(self) -> float:
        return time.time() - self.started_at

    def require_node(self) -> MeshNode:
        if self.node is None:
            raise ToolError("the P2P node is not running on this server (p2p.enabled = false)", code="p2p_disabled")
        return self.node

    def require_queue(self) -> WorkQueue:
        if self.queue is None:
            raise ToolError("the task queue is not running on this server (taskqueue.enabled = false)",
                            code="taskqueue_disabled")
        return self.queue


def services_of(ctx: ToolContext) -> Services:
    """The node's services, as the engine hands them to a tool (``ctx.app_state``)."""
    state = ctx.app_state
    if not isinstance(state, Services):
        raise TypeError(f"this tool needs the node's Services as its context's app_state, not "
                        f"{type(state).__name__}: serve it from an engine built by "
                        "triomcp.server.app.build_services")
    return state
