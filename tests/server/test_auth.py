"""HTTP authorization (bearer tokens, OAuth JWT/JWKS), /metrics and request ids, on real Hypercorn."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import make_settings, run_app
from tests.helpers.auth import write_tokens
from tests.helpers.http import JSON_HEADERS, meta, modern_headers, open_session
from tests.toolkit import register_test_tools
from triomcp.errors import ConfigError
from triomcp.logs import RequestIdFilter
from triomcp.server.app import create_app
from triomcp.server.auth import parse_tokens
from triomcp.settings import load_settings

ISSUER = "https://auth.example.test"


def call_body(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {}, "_meta": meta()}}


async def call(c: httpx.AsyncClient, name: str, token: str | None, arguments: dict[str, Any] | None = None,
               **headers: str) -> httpx.Response:
    h = {**modern_headers("tools/call", name), **headers}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return await c.post("/mcp", headers=h, json=call_body(name, arguments or ({"text": "hi"} if name == "echo" else {})))


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[str]:
    write_tokens(tmp_path / "data" / "tokens", {
        "alice-token": ("alice", "triomcp:status"),
        "bob-token": ("bob", "triomcp:status,triomcp:tasks"),
        "ops-token": ("ops", "triomcp:metrics"),
    })
    app = create_app(make_settings(tmp_path, auth={"tokens_file": "tokens"}), configure=register_test_tools)
    async with run_app(app) as url:
        yield url


async def test_no_token_is_401_with_a_bearer_challenge(token_server: str) -> None:
    async with httpx.AsyncClient(base_url=token_server, timeout=10) as c:
        r = await call(c, "echo", None)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer ")
        assert r.json()["jsonrpc"] == "2.0" and "bearer token" in r.json()["error"]["message"]
        r = await call(c, "echo", "not-a-token")
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = await c.post("/mcp", headers={**JSON_HEADERS, "authorization": "Basic YTpi"}, json=call_body("echo"))
        assert r.status_code == 401 and 'error="invalid_request"' in r.headers["www-authenticate"]
        # Health and readiness stay open for probes.
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200


async def test_scopes_open_tool_groups_and_403_names_the_scope(token_server: str) -> None:
    async with httpx.AsyncClient(base_url=token_server, timeout=10) as c:
        r = await call(c, "echo", "alice-token")
        assert r.status_code == 200 and r.json()["result"]["structuredContent"] == {"ok": True, "text": "hi"}
        r = await call(c, "taskqueue_list", "alice-token")
        assert r.status_code == 403
        challenge = r.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and "triomcp:tasks" in challenge
        assert "triomcp:tasks" in r.json()["error"]["message"]
        # bob holds the tasks scope: the guard lets the call through (the queue is off in this app).
        r = await call(c, "taskqueue_list", "bob-token")
        assert r.status_code == 200
        assert r.json()["result"]["structuredContent"]["error"]["code"] == "taskqueue_disabled"


async def test_legacy_sessions_are_bound_to_the_principal(token_server: str) -> None:
    async with httpx.AsyncClient(base_url=token_server, timeout=10,
                                 headers={"authorization": "Bearer alice-token"}) as alice:
        h = await open_session(alice)
        ok = await alice.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert ok.status_code == 200 and ok.json()["result"]["tools"]
        stolen = await alice.post("/mcp", headers={**h, "authorization": "Bearer bob-token"},
                                  json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        assert stolen.status_code == 404  # another principal's session does not exist for it


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_official_client_with_a_token(token_server: str, mode: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": "Bearer bob-token"})
    async with http, Client(streamable_http_client(f"{token_server}/mcp", http_client=http),
                            mode=mode) as client:  # type: ignore[arg-type]
        result = await client.call_tool("echo", {"text": mode})
        assert result.structured_content == {"ok": True, "text": mode}


async def test_metrics_need_the_metrics_scope_and_count_calls(token_server: str) -> None:
    async with httpx.AsyncClient(base_url=token_server, timeout=10) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers={"authorization": "Bearer alice-token"})).status_code == 403
        for _ in range(3):
            assert (await call(c, "echo", "alice-token")).status_code == 200
        await call(c, "nope", None)
        r = await c.get("/metrics", headers={"authorization": "Bearer ops-token"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert 'triomcp_mcp_tool_calls_total{era="modern",outcome="ok",tool="echo"} 3.0' in text
        assert 'triomcp_mcp_tool_call_seconds_count{era="modern",tool="echo"} 3.0' in text
        assert 'triomcp_http_requests_total{method="POST",status="401"}' in text
        assert 'triomcp_auth_refusals_total{reason="missing"}' in text
        assert "triomcp_mcp_sessions_open 0.0" in text


async def test_token_file_is_reread_when_it_changes(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    tokens = tmp_path / "data" / "tokens"
    write_tokens(tokens, {"first": ("a", "triomcp:status")})
    app = create_app(make_settings(tmp_path, auth={"tokens_file": str(tokens)}), configure=register_test_tools)
    auth = app.state.services.auth
    auth.load()
    assert (await auth.authenticate("Bearer first", scheme="http", host="h")).principal == "token:a"
    write_tokens(tokens, {"second": ("b", "triomcp:status")})
    os.utime(tokens, (time.time() + 5, time.time() + 5))
    await trio.sleep(3)  # past the 2 s re-check interval (autojump clock)
    assert (await auth.authenticate("Bearer second", scheme="http", host="h")).principal == "token:b"
    with pytest.raises(Exception, match="not valid"):
        await auth.authenticate("Bearer first", scheme="http", host="h")


def test_token_file_errors_name_the_line() -> None:
    with pytest.raises(ConfigError, match="tokens:2"):
        parse_tokens("ok triomcp:status sha256:" + "0" * 64 + "\nbroken line\n", "tokens")
    with pytest.raises(ConfigError, match="64 hex"):
        parse_tokens("a b sha256:abcd", "tokens")


def test_bad_auth_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="oauth_jwks_url"):
        load_settings(auth={"oauth_issuer": ISSUER})
    with pytest.raises(ConfigError, match="resource_url"):
        load_settings(auth={"oauth_issuer": ISSUER, "oauth_jwks_url": "https://x/jwks"})
    with pytest.raises(ConfigError, match="not allowed"):
        load_settings(auth={"algorithms": ["HS256"]})


async def test_missing_token_file_stops_startup(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, auth={"tokens_file": "absent"}))
    with pytest.raises(ConfigError, match="does not exist"):
        app.state.services.auth.load()


# -- OAuth 2.1 resource server ----------------------------------------------------------------

class Issuer:
    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "RESOURCE", "sub": "carol", "iat": now, "exp": now + 300,
                "scope": "triomcp:status", **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture
async def oauth_server(tmp_path: Path) -> AsyncIterator[tuple[str, Issuer, Callable[..., str]]]:
    """A server validating JWTs from ``Issuer``, whose JWKS is served over HTTP by a second server."""
    issuer = Issuer()

    async def jwks(request: Any) -> JSONResponse:
        return JSONResponse(issuer.jwks())

    jwks_app = Starlette(routes=[Route("/jwks", jwks)])
    async with trio.open_nursery() as nursery:
        from hypercorn.config import Config
        from hypercorn.trio import serve
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.errorlog = None
        stop = trio.Event()
        binds = await nursery.start(lambda task_status: serve(jwks_app, config, shutdown_trigger=stop.wait,
                                                              task_status=task_status))
        # The JWKS fetch is blocking I/O in a worker thread: the real path, against a real server.
        settings = make_settings(tmp_path, auth={
            "oauth_issuer": ISSUER, "oauth_jwks_url": f"{binds[0]}/jwks", "resource_url": "http://placeholder/mcp"})
        port_app = create_app(settings, configure=register_test_tools)
        async with run_app(port_app) as url:
            resource = f"{url}/mcp"
            # The audience is this server's URL; set now that the port is known.
            port_app.state.services.auth.settings = settings.auth.model_copy(update={"resource_url": resource})

            def token(**claims: Any) -> str:
                return issuer.token(**{"aud": resource, **claims})

            yield url, issuer, token
        stop.set()


async def test_jwt_from_the_jwks_is_accepted(oauth_server: tuple[str, Issuer, Callable[..., str]]) -> None:
    url, _, token = oauth_server
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        r = await call(c, "echo", token())
        assert r.status_code == 200 and r.json()["result"]["structuredContent"]["ok"] is True
        r = await call(c, "taskqueue_list", token())
        assert r.status_code == 403 and "triomcp:tasks" in r.headers["www-authenticate"]
        assert "resource_metadata=" in r.headers["www-authenticate"]
        r = await call(c, "taskqueue_list", token(scope="triomcp:status triomcp:tasks"))
        assert r.status_code == 200


@pytest.mark.parametrize(("claims", "why"), [
    ({"aud": "https://someone-else.test/mcp"}, "audience"),
    ({"iss": "https://evil.test"}, "issuer"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"sub": None}, "sub"),
])
async def test_bad_jwts_are_401(oauth_server: tuple[str, Issuer, Callable[..., str]], claims: dict[str, Any],
                                why: str) -> None:
    url, _, token = oauth_server
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        r = await call(c, "echo", token(**claims))
        assert r.status_code == 401, why
        challenge = r.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge
        assert f'resource_metadata="{url}/.well-known/oauth-protected-resource/mcp"' in challenge


async def test_a_token_signed_by_another_key_is_401(oauth_server: tuple[str, Issuer, Callable[..., str]]) -> None:
    url, _, token = oauth_server
    forger = Issuer(kid="k1")  # same kid, different key
    forged = forger.token(aud=f"{url}/mcp")
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        assert (await call(c, "echo", forged)).status_code == 401
        assert (await call(c, "echo", token())).status_code == 200


async def test_protected_resource_metadata(oauth_server: tuple[str, Issuer, Callable[..., str]]) -> None:
    url, _, _ = oauth_server
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            doc = (await c.get(path)).json()
            assert doc["resource"] == f"{url}/mcp"
            assert doc["authorization_servers"] == [ISSUER]
            assert "triomcp:tasks" in doc["scopes_supported"]


# -- request ids ---------------------------------------------------------------------------------

async def test_request_ids_are_returned_and_logged(server: str, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as c:
        r = await call(c, "echo", None)
        assert len(r.headers["x-request-id"]) == 16
        r = await call(c, "echo", None, **{"x-request-id": "trace-42"})
        assert r.headers["x-request-id"] == "trace-42"
        r = await call(c, "echo", None, **{"x-request-id": "bad id\twith spaces"})
        assert r.headers["x-request-id"] != "bad id\twith spaces"
        caplog.handler.addFilter(RequestIdFilter())  # as setup_logging does for the real handler
        with caplog.at_level("ERROR"):
            r = await call(c, "crash", None, {"text": "x"}, **{"x-request-id": "crash-7"})
        assert r.json()["result"]["isError"] is True
    records = [rec for rec in caplog.records if "crash" in rec.getMessage()]
    assert records and all(getattr(rec, "request_id", None) == "crash-7" for rec in records)


async def test_metrics_are_open_without_auth(app_factory: Callable[..., Starlette]) -> None:
    async with run_app(app_factory()) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and "triomcp_http_requests_total" in r.text
        assert (await c.get("/.well-known/oauth-protected-resource")).status_code == 404


async def test_http_rate_limit_per_client_is_429_with_retry_after(app_factory: Callable[..., Starlette]) -> None:
    app = app_factory(http={"rate_limit_per_second": 0.01, "rate_limit_burst": 3})
    async with run_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        statuses = [(await call(c, "echo", None)).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        r = await call(c, "echo", None)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == -32600 and "Too Many Requests" in r.json()["error"]["message"]
        assert (await c.get("/healthz")).status_code == 200  # probes are not limited
