"""The lifecycle methods: capabilities, the legacy handshake and its notifications, discover, ping,
``logging/setLevel``."""

from __future__ import annotations

import logging
from typing import Any

from mcp_types import methods as spec
from pydantic import ValidationError

from triomcp.errors import InvalidParams
from triomcp.mcp import jsonrpc
from triomcp.mcp.config import SyncHandler
from triomcp.mcp.core import Core, Request
from triomcp.mcp.jsonrpc import Message
from triomcp.mcp.outcomes import Reply
from triomcp.mcp.session import Session
from triomcp.mcp.tasks import TASKS_EXTENSION
from triomcp.mcp.versions import LATEST_LEGACY_VERSION, LEGACY_VERSIONS, SUPPORTED_VERSIONS, Era

__all__ = ["Lifecycle", "validation_message"]

log = logging.getLogger("triomcp.mcp")


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class Lifecycle:
    def __init__(self, core: Core) -> None:
        self.core = core

    def handlers(self) -> dict[str, SyncHandler]:
        return {"ping": self._ping, "logging/setLevel": self._set_level, "server/discover": self._discover}

    def capabilities(self, era: Era) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "completions": {},
        }
        if era is Era.LEGACY:
            caps["logging"] = {}
        if self.core.tasks is not None:
            if era is Era.LEGACY:
                caps["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
            else:
                caps["extensions"] = {TASKS_EXTENSION: {}}
        return caps

    def _with_instructions(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.core.config.instructions:
            result["instructions"] = self.core.config.instructions
        return result

    # -- legacy handshake ------------------------------------------------------------------------
    def initialize(self, msg: Message, *, principal: str | None, now: float) -> Reply:
        params = msg.raw.get("params")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        version = requested if requested in LEGACY_VERSIONS else LATEST_LEGACY_VERSION
        try:
            spec.validate_client_request("initialize", version, params)
        except ValidationError as exc:
            error = InvalidParams(f"Invalid params: {validation_message(exc)}")
            return Reply(400, jsonrpc.error_response(msg.id, error))
        assert isinstance(params, dict) and msg.id is not None
        session = self.core.sessions.create(
            principal=principal, protocol_version=version, client_capabilities=dict(params.get("capabilities") or {}),
            client_info=dict(params.get("clientInfo") or {}), now=now)
        result = self._with_instructions({"protocolVersion": version, "capabilities": self.capabilities(Era.LEGACY),
                                          "serverInfo": self.core.server_info()})
        return Reply(200, jsonrpc.result_response(msg.id, result), {"mcp-session-id": session.id})

    @staticmethod
    def notification(session: Session, msg: Message) -> None:
        if msg.method == "notifications/initialized":
            session.fire("initialized")
        elif msg.method == "notifications/cancelled":
            request_id = msg.params.get("requestId")
            cancel = session.inflight.get(request_id) if isinstance(request_id, (str, int)) else None
            if cancel is not None:
                log.debug("session %s: request %r cancelled by the client", session.id[:8], request_id)
                cancel()
        # Other notifications (progress, roots/list_changed) need no action here.

    @staticmethod
    def response(session: Session, msg: Message) -> None:
        """The client's answer to a server-to-client request (elicitation, sampling)."""
        ident = msg.raw.get("id")
        resolver = session.pending.pop(ident, None) if isinstance(ident, (str, int)) else None
        if resolver is None:
            log.debug("session %s: response to unknown server request %r ignored", session.id[:8], ident)
            return
        resolver(msg.raw)

    # -- simple methods --------------------------------------------------------------------------
    @staticmethod
    def _ping(req: Request) -> dict[str, Any]:
        return {}

    @staticmethod
    def _set_level(req: Request) -> dict[str, Any]:
        assert req.session is not None
        req.session.log_level = str(req.params["level"])
        return {}

    def _discover(self, req: Request) -> dict[str, Any]:
        # serverInfo goes in result _meta only (Core.finish adds it): DiscoverResult has no such field.
        return self._with_instructions({"supportedVersions": list(SUPPORTED_VERSIONS),
                                        "capabilities": self.capabilities(Era.MODERN)})
