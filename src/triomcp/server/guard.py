"""HTTP safety checks in front of every route: Host and Origin (DNS rebinding)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from triomcp.errors import HttpError
from triomcp.mcp.engine import Engine
from triomcp.server.mcp_endpoint import send_reply

__all__ = ["GuardMiddleware", "host_allowed", "origin_allowed"]

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def _split_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    """True when the Host header (port ignored) is on the allow-list; ``*`` allows any."""
    if "*" in allowed:
        return True
    if not host:
        return False
    name = _split_host(host)
    return name in {a.lower() for a in allowed}


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """Loopback origins are always allowed; others must be listed exactly (scheme://host[:port])."""
    if "*" in allowed:
        return True
    if origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    parts = urlsplit(origin)
    host = parts.hostname or ""
    return bool(parts.scheme in ("http", "https") and (host in _LOOPBACK_HOSTS or re.fullmatch(r"127(\.\d{1,3}){3}", host)))


class GuardMiddleware:
    """421 for a Host not on the allow-list; 403 for an Origin that is neither loopback nor listed."""

    def __init__(self, app: ASGIApp, *, engine: Engine, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.engine = engine
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        if not host_allowed(host, self.allowed_hosts):
            err = HttpError(421, f"Misdirected Request: Host {host!r} is not allowed (http.allowed_hosts)")
            await send_reply(send, self.engine.error_reply(err))
            return
        if origin is not None and not origin_allowed(origin, self.allowed_origins):
            err = HttpError(403, f"Forbidden: Origin {origin!r} is not allowed (http.allowed_origins)")
            await send_reply(send, self.engine.error_reply(err))
            return
        await self.app(scope, receive, send)
