"""Integrity-protected ``requestState`` for modern input-required results.

``requestState`` travels through the client, so it is attacker-controlled
input: it is signed with HMAC-SHA256 and bound to the method, the target
(tool, prompt or URI), the caller's principal and a digest of the arguments,
and it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from triomcp._owner import tag_of, tagged
from triomcp.errors import InvalidParams

__all__ = ["RequestStateSigner", "arguments_digest"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def arguments_digest(arguments: Any) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class RequestStateSigner:
    def __init__(self, key: bytes | None = None, *, max_age: float = 3600.0, owner_tag: str = "") -> None:
        self._key = key or secrets.token_bytes(32)
        self.max_age = max_age
        self.owner_tag = owner_tag
        """In front of every token (:mod:`triomcp._owner`): in a mesh, the node that can verify it."""

    def sign(self, claims: dict[str, Any], *, now: float) -> str:
        body = json.dumps({**claims, "iat": int(now)}, sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return tagged(self.owner_tag, f"{_b64(body)}.{_b64(mac)}")

    def verify(self, token: str, expected: dict[str, Any], *, now: float) -> dict[str, Any]:
        """The claims, if the token is ours, unexpired and bound to ``expected``; else InvalidParams."""
        if tag_of(token) is not None:
            token = token.split(".", 1)[1]
        try:
            body_b64, mac_b64 = token.split(".", 1)
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except (ValueError, TypeError):
            raise InvalidParams("requestState is malformed") from None
        good = hmac.new(self._key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(good, mac):
            raise InvalidParams("requestState failed its integrity check")
        claims: dict[str, Any] = json.loads(body)
        if now - float(claims.get("iat", 0)) > self.max_age:
            raise InvalidParams("requestState has expired; retry the original request")
        for key, value in expected.items():
            if claims.get(key) != value:
                raise InvalidParams(f"requestState does not belong to this request ({key} differs)")
        return claims
