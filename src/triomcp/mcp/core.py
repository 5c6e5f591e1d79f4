"""What every method handler shares: the validated :class:`Request` and the engine's :class:`Core`.

The handlers live by feature area (``lifecycle``, ``tools``, ``resources``, ``prompts``,
``task_methods``, ``listeners``); :mod:`triomcp.mcp.dispatch` routes a request to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import SERVER_INFO_META_KEY
from mcp_types import methods as spec

from triomcp.errors import MissingCapability
from triomcp.mcp.config import EngineConfig, EngineHooks
from triomcp.mcp.jsonrpc import Message
from triomcp.mcp.registry import Registry
from triomcp.mcp.request_state import RequestStateSigner
from triomcp.mcp.session import Session, SessionStore
from triomcp.mcp.tasks import TASKS_EXTENSION, TaskBackend
from triomcp.mcp.versions import Era

__all__ = ["Core", "Request"]


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request, era-independent."""

    era: Era
    version: str
    message: Message
    principal: str | None
    session: Session | None
    client_capabilities: dict[str, Any]
    headers: dict[str, str]
    auth: Any = None
    executing_task: bool = False
    """The call is a task's own execution (a worker running it): never make it a task again."""

    @property
    def id(self) -> str | int:
        ident = self.message.id
        assert ident is not None
        return ident

    @property
    def params(self) -> dict[str, Any]:
        return self.message.params

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}

    @property
    def declares_tasks(self) -> bool:
        """The request's client capabilities name the tasks extension."""
        extensions = self.client_capabilities.get("extensions")
        return isinstance(extensions, dict) and TASKS_EXTENSION in extensions

    def require_tasks_extension(self, why: str) -> None:
        if not self.declares_tasks:
            raise MissingCapability(
                f"{why}: declare the {TASKS_EXTENSION!r} extension in the client capabilities",
                data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})


class Core:
    """The engine's shared state: registry, sessions, settings, collaborators, counters."""

    def __init__(self, *, registry: Registry, sessions: SessionStore, config: EngineConfig, hooks: EngineHooks,
                 wall_clock: Callable[[], float]) -> None:
        self.registry = registry
        self.sessions = sessions
        self.config = config
        self.hooks = hooks
        self.signer = RequestStateSigner(config.request_state_key, owner_tag=config.owner_tag)
        self.wall_clock = wall_clock
        self.inflight = 0

    @property
    def tasks(self) -> TaskBackend | None:
        return self.hooks.tasks

    def server_info(self) -> dict[str, Any]:
        return {"name": self.config.server_name, "version": self.config.server_version}

    def finish(self, req: Request, result: dict[str, Any]) -> dict[str, Any]:
        """Era decorations: ``resultType``, server info, cache directives."""
        if req.era is Era.MODERN:
            result.setdefault("resultType", "complete")
            meta = result.setdefault("_meta", {})
            meta.setdefault(SERVER_INFO_META_KEY, self.server_info())
            if req.message.method in spec.CACHEABLE_METHODS:
                result.setdefault("ttlMs", self.config.list_ttl_ms)
                result.setdefault("cacheScope", "private")
        return result
