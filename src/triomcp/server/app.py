"""The Starlette application and its lifespan: one Trio nursery for every service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import sniffio
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from triomcp import __version__
from triomcp._owner import owner_tag
from triomcp.mcp.config import EngineConfig, EngineHooks
from triomcp.mcp.engine import Engine
from triomcp.mcp.plugins import load_plugins
from triomcp.mcp.registry import Registry
from triomcp.p2p import IDENTITY_FILE, Node
from triomcp.p2p.identity import load_or_create_identity, peer_id_of
from triomcp.server.admission import Admission
from triomcp.server.auth import METADATA_PATH, Authenticator
from triomcp.server.guard import (
    AuthMiddleware,
    GuardMiddleware,
    McpFront,
    ObserveMiddleware,
    RateLimitMiddleware,
)
from triomcp.server.http_gate import RequestGate
from triomcp.server.lifespan import running_services
from triomcp.server.mcp_endpoint import McpEndpoint
from triomcp.server.mcp_tasks import QueueTaskBackend
from triomcp.server.metrics import CONTENT_TYPE, Metrics
from triomcp.server.relay import Relay
from triomcp.server.services import Services
from triomcp.server.tools import register_builtin_tools
from triomcp.server.upstream import LocalNodeForwarder
from triomcp.settings import Settings, load_settings

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

__all__ = ["NOT_TRIO_MESSAGE", "build_services", "create_app"]

log = logging.getLogger("triomcp.server")

NOT_TRIO_MESSAGE = (
    "triomcp must run under Trio, but the event loop is {library!r}. Start it with `triomcp serve`, "
    "or `hypercorn --worker-class trio triomcp.app:app` (deploy/hypercorn.toml sets worker_class = \"trio\"); "
    "uvicorn and hypercorn's asyncio worker are not supported."
)


def _engine_config(settings: Settings, key_pair: KeyPair | None) -> EngineConfig:
    key = settings.mcp.request_state_key
    return EngineConfig(
        server_name="triomcp",
        server_version=__version__,
        session_idle_timeout=settings.mcp.session_idle_timeout,
        max_sessions=settings.mcp.max_sessions,
        replay_buffer_events=settings.mcp.replay_buffer_events,
        page_size=settings.mcp.page_size,
        request_state_key=key.get_secret_value().encode() if key else None,
        owner_tag=owner_tag(peer_id_of(key_pair)) if key_pair is not None else "",
    )


def node_identity(settings: Settings) -> KeyPair | None:
    """The identity of this process's libp2p node, read (or created) here, once per start, when it
    runs one of its own; None without one. The owner tag in front of the ids it mints
    (:mod:`triomcp._owner`) and the node's peer id both come from it: they cannot disagree."""
    if not settings.p2p.enabled or settings.p2p.mode != "embedded":
        return None
    return load_or_create_identity(settings.data_dir / IDENTITY_FILE)


def build_services(settings: Settings, *, configure: Callable[[Registry], None] | None = None) -> Services:
    """The engine with every tool (built-in, plugins, ``configure``), not yet started.

    Shared by the HTTP app and the standalone ``triomcp node``, so both serve the same tools.
    """
    registry = Registry()
    register_builtin_tools(registry)
    load_plugins(registry, enabled=settings.mcp.plugins_enabled, disabled=settings.mcp.plugins_disabled)
    if settings.mcp.conformance_fixtures:
        from triomcp import conformance  # imported only when asked for: nothing of it on a production node

        conformance.register(registry)
    if configure is not None:
        configure(registry)
    services = Services(settings=settings, key_pair=node_identity(settings))
    services.metrics = Metrics()
    services.auth = Authenticator(settings.auth, settings.data_dir)
    backend = None
    if settings.taskqueue.enabled and settings.p2p.mode == "embedded":
        backend = services.extras["mcp_tasks"] = QueueTaskBackend(services)
    forward = None
    if settings.p2p.mode == "local-node":
        forward = services.extras["forwarder"] = LocalNodeForwarder()
    hooks = EngineHooks(app_state=services, tasks=backend, forward=forward,
                        observe_call=services.metrics.observe_tool_call,
                        guard_tool=services.auth.tool_guard if services.auth.enabled else None)
    services.engine = Engine(registry, _engine_config(settings, services.key_pair), hooks=hooks)
    services.metrics.watch(services)
    return services


MCP_PATH = "/mcp"


class App(Starlette):
    """Starlette for every route but ``/mcp``, which goes straight to its :class:`McpFront`.

    Measured (docs/performance.md, section 1): under load the middleware stack, Starlette's
    error and exception middlewares, its router and its ``send`` wrappers cost about 20 µs of a
    trivial call, most of it in resuming a chain of ten coroutines at every checkpoint. The
    front runs the same checks, of the same middleware instances, in one callable. The route
    stays in the routing table (the app still lists it); every method of ``/mcp`` reaches the
    endpoint, whose engine answers those it does not serve (405, ``Allow``)."""

    def __init__(self, *, mcp: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mcp = mcp

    def build_middleware_stack(self) -> ASGIApp:
        return _McpFirst(super().build_middleware_stack(), self.mcp)


class _McpFirst:
    def __init__(self, app: ASGIApp, mcp: ASGIApp) -> None:
        self.app = app
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _route_path(scope) == MCP_PATH:
            await self.mcp(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path Starlette's router matches: ``path`` without a ``root_path`` it starts with."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root):]
    return path


def _service_routes(services: Services) -> list[Route]:
    """Health, readiness, metrics and the OAuth protected-resource metadata."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", "version": __version__})

    async def readyz(request: Request) -> JSONResponse:
        ok = services.ready and not services.stopping.is_set()
        upstream = services.extras.get("upstream")
        if upstream is None:
            return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
        # local-node mode: ready once the node that serves the tools is connected.
        connected = upstream.is_connected()
        return JSONResponse({"ready": ok and connected, "local_node": connected},
                            status_code=200 if ok and connected else 503)

    async def metrics(request: Request) -> Response:
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    async def resource_metadata(request: Request) -> JSONResponse:
        if not services.auth.enabled:
            return JSONResponse({"error": "not_found", "error_description": "authorization is off"}, 404)
        host = request.headers.get("host", "localhost")
        return JSONResponse(services.auth.metadata(request.url.scheme, host),
                            headers={"cache-control": "max-age=300"})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(METADATA_PATH, resource_metadata, methods=["GET"]),
        Route(METADATA_PATH + "/mcp", resource_metadata, methods=["GET"]),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    configure: Callable[[Registry], None] | None = None,
) -> Starlette:
    """Build the app. ``configure`` may add tools, resources and prompts (tests, embedding)."""
    services = build_services(settings or load_settings(), configure=configure)
    settings = services.settings
    http = settings.http
    services.admission = Admission(http.max_calls_in_flight, http.max_calls_in_flight_per_principal,
                                   http.admission_wait)
    if http.max_requests_in_progress:
        services.request_gate = RequestGate(http.max_requests_in_progress, http.max_requests_in_progress_per_address,
                                            http.request_wait, http.request_park_after, http.refusal_pause)
    relay = None
    if settings.p2p.enabled and settings.p2p.mode == "embedded":
        relay = services.relay = Relay(services.engine, lambda: services.node if isinstance(services.node, Node)
                                       else None)
    endpoint = McpEndpoint(services.engine, max_body_bytes=http.max_body_bytes, stopping=services.stopping,
                           admission=services.admission, relay=relay)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        library = sniffio.current_async_library()
        if library != "trio":
            raise RuntimeError(NOT_TRIO_MESSAGE.format(library=library))
        await trio.to_thread.run_sync(services.auth.load)
        async with running_services(services), trio.open_nursery() as nursery:
            await nursery.start(endpoint.watchers.run)
            log.info("triomcp %s ready", __version__)
            yield {"services": services}
            nursery.cancel_scope.cancel()

    # The middlewares, outermost first: request id, Host/Origin, rate limit (/mcp only), auth (/mcp and
    # /metrics). /mcp meets them folded into McpFront; the other routes in Starlette's stack, where the
    # rate limit, which only limits /mcp, has nothing to do.
    engine = services.engine
    front = McpFront(
        endpoint,
        observe=ObserveMiddleware(endpoint, metrics=services.metrics),
        guard=GuardMiddleware(endpoint, engine=engine, allowed_hosts=http.allowed_hosts,
                              allowed_origins=http.allowed_origins),
        rate_limit=RateLimitMiddleware(endpoint, engine=engine, rate=http.rate_limit_per_second,
                                       burst=http.rate_limit_burst),
        auth=AuthMiddleware(endpoint, engine=engine, auth=services.auth))
    app = App(mcp=front, routes=[Route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"]),
                                 *_service_routes(services)], lifespan=lifespan)
    app.state.services = services
    services.http_app = app  # what the node serves to its peers over HTTP/1.1 over libp2p
    # Starlette runs the middleware added last first.
    app.add_middleware(AuthMiddleware, engine=engine, auth=services.auth)
    app.add_middleware(GuardMiddleware, engine=engine, allowed_hosts=http.allowed_hosts,
                       allowed_origins=http.allowed_origins)
    app.add_middleware(ObserveMiddleware, metrics=services.metrics)
    return app
