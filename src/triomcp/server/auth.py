"""HTTP authorization: static bearer tokens and OAuth 2.1 resource-server mode (JWT + JWKS).

Who may reach what:

- ``/mcp`` and ``/metrics`` need ``Authorization: Bearer <token>`` once ``auth`` is configured;
  ``/healthz``, ``/readyz`` and the RFC 9728 metadata stay open.
- A token carries scopes; ``auth.scopes`` maps each scope to tool groups. ``tools/call`` of a
  tool whose group no scope of the caller opens is refused with 403 ``insufficient_scope``,
  naming the scopes that would do (in both eras: the refusal is an HTTP answer).
- The principal (``token:<name>`` or ``oauth:<sub>``) binds legacy sessions and queue tasks.
  Tokens themselves are never logged, stored or passed to peers.

Size: three concepts that only serve each other (the token file, the JWKS, the authenticator).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import trio

from triomcp.errors import ConfigError, HttpError
from triomcp.mcp.registry import ToolDef
from triomcp.settings import AuthSettings

__all__ = ["METADATA_PATH", "AuthInfo", "Authenticator", "TokenFile", "hash_token", "new_token"]

log = logging.getLogger("triomcp.auth")

METADATA_PATH = "/.well-known/oauth-protected-resource"
TOKEN_RELOAD_SECONDS = 2.0


@dataclass(frozen=True)
class AuthInfo:
    """An authenticated caller."""

    principal: str
    scopes: frozenset[str]
    groups: frozenset[str]
    """Tool groups the scopes open; ``*`` opens all."""
    method: str
    """``token`` or ``oauth``."""

    def allows(self, group: str) -> bool:
        return "*" in self.groups or group in self.groups


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return "tmcp_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _TokenEntry:
    principal: str
    scopes: frozenset[str]
    digest: bytes


def parse_tokens(text: str, source: str) -> list[_TokenEntry]:
    """Lines ``<principal> <scope>[,<scope>...] sha256:<hex>``; ``#`` starts a comment."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("sha256:"):
            raise ConfigError(f"{source}:{number}: expected '<principal> <scope>[,<scope>...] sha256:<hex>'")
        try:
            digest = bytes.fromhex(parts[2].removeprefix("sha256:"))
        except ValueError:
            raise ConfigError(f"{source}:{number}: the sha256 digest is not hex") from None
        if len(digest) != 32:
            raise ConfigError(f"{source}:{number}: a sha256 digest has 64 hex digits")
        scopes = frozenset(s for s in parts[1].split(",") if s)
        entries.append(_TokenEntry(parts[0], scopes, digest))
    return entries


class TokenFile:
    """The static tokens, re-read when the file changes (checked at most every 2 s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: list[_TokenEntry] = []
        self._mtime: float | None = None
        self._checked = -float("inf")

    def load(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise ConfigError(f"auth.tokens_file {str(self.path)!r} does not exist "
                              "(create it with `triomcp tokens new`)") from None
        if stat.st_mode & 0o077:
            log.warning("auth.tokens_file %s is readable by group or others; chmod 600 it", self.path)
        self._entries = parse_tokens(self.path.read_text(), str(self.path))
        self._mtime = stat.st_mtime

    def append(self, principal: str, scopes: list[str]) -> str:
        """Add a new token for ``principal`` with ``scopes`` (creating the file, mode 0600); returns
        the token, of which only the hash is stored (``triomcp tokens new``)."""
        token = new_token()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as out:
            out.write(f"{principal} {','.join(scopes)} {hash_token(token)}\n")
        return token

    async def _maybe_reload(self) -> None:
        now = trio.current_time()
        if now - self._checked < TOKEN_RELOAD_SECONDS:
            return
        self._checked = now
        try:
            mtime = (await trio.to_thread.run_sync(os.stat, self.path)).st_mtime
            if mtime != self._mtime:
                await trio.to_thread.run_sync(self.load)
                log.info("auth.tokens_file reloaded: %d tokens", len(self._entries))
        except (OSError, ConfigError) as exc:
            log.error("auth.tokens_file not reloaded, keeping the previous tokens: %s", exc)

    async def verify(self, token: str) -> _TokenEntry | None:
        await self._maybe_reload()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self._entries:  # every entry compared: the time does not depend on which matched
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found


class _Jwks:
    """Signing keys by ``kid``, from a URL (fetched in a thread, cached) or a file."""

    def __init__(self, settings: AuthSettings, data_dir: Path) -> None:
        self.url = settings.oauth_jwks_url
        self.file = settings.oauth_jwks_file
        if self.file is not None and not self.file.is_absolute():
            self.file = data_dir / self.file
        self.cache_seconds = settings.jwks_cache_seconds
        self._keys: dict[str | None, Any] = {}
        self._fetched = -float("inf")
        self._lock = trio.Lock()

    def _fetch(self) -> dict[str | None, Any]:
        if self.file is not None:
            data = self.file.read_text()
            keyset = jwt.PyJWKSet.from_json(data)
        else:
            assert self.url is not None
            keyset = jwt.PyJWKClient(self.url, cache_jwk_set=False, timeout=10).get_jwk_set()
        return {key.key_id: key for key in keyset.keys}

    async def key(self, kid: str | None) -> Any:
        async with self._lock:
            stale = trio.current_time() - self._fetched > self.cache_seconds
            # An unknown kid refetches (key rotation), but at most once every 10 s.
            if stale or (kid not in self._keys and trio.current_time() - self._fetched > 10):
                try:
                    self._keys = await trio.to_thread.run_sync(self._fetch)
                    self._fetched = trio.current_time()
                except Exception as exc:
                    log.error("could not load the JWKS: %s", exc)
                    if not self._keys:
                        raise HttpError(503, "the authorization keys (JWKS) are unavailable; try again later",
                                        headers={"retry-after": "5"}) from None
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        return key


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`AuthInfo`, or a 401/403 answer."""

    def __init__(self, settings: AuthSettings, data_dir: Path) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.tokens: TokenFile | None = None
        if settings.tokens_file is not None:
            path = settings.tokens_file if settings.tokens_file.is_absolute() else data_dir / settings.tokens_file
            self.tokens = TokenFile(path)
        self.jwks = _Jwks(settings, data_dir) if settings.oauth_issuer else None
        self.failures: dict[str, int] = {}
        """Refusals by reason, for /metrics."""

    def load(self) -> None:
        """Read the token file at startup: a missing or broken file stops the server."""
        if self.tokens is not None:
            self.tokens.load()

    # -- what the server tells clients ------------------------------------------------
    def metadata_url(self, scheme: str, host: str) -> str:
        resource = self.settings.resource_url or f"{scheme}://{host}/mcp"
        parts = resource.split("/", 3)
        path = "/" + parts[3] if len(parts) > 3 else ""
        return f"{parts[0]}//{parts[2]}{METADATA_PATH}{path}"

    def metadata(self, scheme: str, host: str) -> dict[str, Any]:
        """RFC 9728 protected-resource metadata."""
        servers = self.settings.authorization_servers or (
            [self.settings.oauth_issuer] if self.settings.oauth_issuer else [])
        return {
            "resource": self.settings.resource_url or f"{scheme}://{host}/mcp",
            "authorization_servers": servers,
            "scopes_supported": sorted(self.settings.scopes),
            "bearer_methods_supported": ["header"],
            "resource_name": "triomcp",
        }

    def _challenge(self, scheme: str, host: str, **params: str) -> str:
        fields = [f'{k}="{v}"' for k, v in params.items()]
        if self.jwks is not None:
            fields.append(f'resource_metadata="{self.metadata_url(scheme, host)}"')
        else:
            fields.insert(0, 'realm="triomcp"')
        return "Bearer " + ", ".join(fields)

    def _refuse(self, reason: str, scheme: str, host: str, message: str, **params: str) -> HttpError:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        return HttpError(401, message, headers={"www-authenticate": self._challenge(scheme, host, **params)})

    # -- checks ----------------------------------------------------------------------------
    async def authenticate(self, authorization: str | None, *, scheme: str, host: str) -> AuthInfo:
        if not authorization:
            raise self._refuse("missing", scheme, host, "Unauthorized: this server needs a bearer token")
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise self._refuse("malformed", scheme, host, "Unauthorized: use 'Authorization: Bearer <token>'",
                               error="invalid_request")
        if self.tokens is not None:
            entry = await self.tokens.verify(token)
            if entry is not None:
                return AuthInfo(f"token:{entry.principal}", entry.scopes, self._groups(entry.scopes), "token")
        if self.jwks is not None and token.count(".") == 2:
            return await self._verify_jwt(token, scheme, host)
        raise self._refuse("invalid", scheme, host, "Unauthorized: the token is not valid", error="invalid_token")

    async def _verify_jwt(self, token: str, scheme: str, host: str) -> AuthInfo:
        s = self.settings
        assert self.jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._refuse("invalid", scheme, host, "Unauthorized: the token is not a JWT",
                               error="invalid_token") from None
        key = await self.jwks.key(header.get("kid"))
        if key is None:
            raise self._refuse("invalid", scheme, host, "Unauthorized: the token's signing key is unknown",
                               error="invalid_token")
        try:
            claims = jwt.decode(
                token, key, algorithms=s.algorithms, audience=s.resource_url, issuer=s.oauth_issuer,
                leeway=s.leeway_seconds, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise self._refuse("expired", scheme, host, "Unauthorized: the token has expired",
                               error="invalid_token", error_description="token expired") from None
        except jwt.PyJWTError as exc:
            raise self._refuse("invalid", scheme, host, f"Unauthorized: {exc}", error="invalid_token") from None
        raw = claims.get("scope", claims.get("scp", ""))
        scopes = frozenset(raw.split() if isinstance(raw, str) else [str(x) for x in raw])
        return AuthInfo(f"oauth:{claims['sub']}", scopes, self._groups(scopes), "oauth")

    def _groups(self, scopes: frozenset[str]) -> frozenset[str]:
        groups: set[str] = set()
        for scope in scopes:
            groups.update(self.settings.scopes.get(scope, ()))
        return frozenset(groups)

    def scopes_for(self, group: str) -> list[str]:
        return sorted(scope for scope, groups in self.settings.scopes.items() if group in groups or "*" in groups)

    def require(self, auth: Any, group: str, *, what: str, scheme: str = "https", host: str = "") -> None:
        """403 ``insufficient_scope`` unless ``auth`` opens ``group``. No-op for unauthenticated
        deployments and for peers (they are authorized by the authorized-peers file)."""
        if not isinstance(auth, AuthInfo) or auth.allows(group):
            return
        needed = self.scopes_for(group)
        self.failures["insufficient_scope"] = self.failures.get("insufficient_scope", 0) + 1
        params = {"error": "insufficient_scope", "scope": " ".join(needed)}
        if self.jwks is not None and host:
            params["resource_metadata"] = self.metadata_url(scheme, host)
        challenge = "Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items())
        raise HttpError(403, f"Forbidden: {what} needs one of the scopes {needed}",
                        headers={"www-authenticate": challenge})

    def tool_guard(self, req: Any, tool: ToolDef) -> None:
        self.require(req.auth, tool.group, what=f"the tool {tool.name!r} (group {tool.group!r})",
                     host=req.headers.get("host", ""))
