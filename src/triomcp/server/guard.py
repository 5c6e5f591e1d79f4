"""What stands in front of every route, outermost first.

1. :class:`ObserveMiddleware`: a request id (the caller's ``X-Request-Id`` if plain, else a new
   one) in the logging context and the response headers; HTTP request counts for ``/metrics``.
2. :class:`GuardMiddleware`: Host and Origin checks (DNS rebinding).
3. :class:`RateLimitMiddleware`: a request budget per client address on ``/mcp`` (when set).
4. :class:`AuthMiddleware`: bearer tokens on ``/mcp`` and ``/metrics`` when auth is configured.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triomcp._ratelimit import TokenBucket
from triomcp.errors import HttpError
from triomcp.logs import REQUEST_ID, new_request_id, valid_request_id
from triomcp.mcp.engine import Engine
from triomcp.server.auth import Authenticator
from triomcp.server.http_io import send_reply
from triomcp.server.metrics import Metrics

__all__ = ["AuthMiddleware", "GuardMiddleware", "ObserveMiddleware", "RateLimitMiddleware", "host_allowed",
           "origin_allowed"]

PROTECTED_PATHS = ("/mcp", "/metrics")

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


class ObserveMiddleware:
    """Request ids and HTTP request counts."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                supplied = valid_request_id(value.decode("latin-1"))
                break
        request_id = supplied or new_request_id()
        token = REQUEST_ID.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            self.metrics.http_requests.labels(scope["method"], str(status or 500)).inc()


class AuthMiddleware:
    """401 without a valid bearer token on ``/mcp`` and ``/metrics``; sets the principal."""

    def __init__(self, app: ASGIApp, *, engine: Engine, auth: Authenticator) -> None:
        self.app = app
        self.engine = engine
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.enabled or scope["path"] not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = host = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        scheme = scope.get("scheme", "http")
        try:
            info = await self.auth.authenticate(authorization, scheme=scheme, host=host or "localhost")
            if scope["path"] == "/metrics":
                self.auth.require(info, "metrics", what="/metrics", scheme=scheme, host=host or "")
        except HttpError as err:
            await send_reply(send, self.engine.error_reply(err))
            return
        scope = {**scope, "triomcp.principal": info.principal, "triomcp.auth": info}
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """429 (``Retry-After``) once a client address spends its budget on ``/mcp``."""

    MAX_TRACKED = 10_000

    def __init__(self, app: ASGIApp, *, engine: Engine, rate: float | None, burst: int) -> None:
        self.app = app
        self.engine = engine
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate is None or scope["path"] != "/mcp" or "triomcp.peer" in scope:
            await self.app(scope, receive, send)  # a relayed request was counted where it landed
            return
        client = (scope.get("client") or ("?", 0))[0]
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.MAX_TRACKED:  # forget the idle (refilled) ones first
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full()}
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst)
        if not bucket.take():
            self.refused += 1
            retry = max(1, round(1 / self.rate))
            err = HttpError(429, f"Too Many Requests: the limit is {self.rate:g}/s per client (http.rate_limit_per_second)",
                            headers={"retry-after": str(retry)})
            await send_reply(send, self.engine.error_reply(err))
            return
        await self.app(scope, receive, send)
