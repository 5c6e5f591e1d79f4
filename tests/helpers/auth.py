"""Bearer-token files for servers under test."""

from __future__ import annotations

from pathlib import Path

from triomcp.server.auth import hash_token

__all__ = ["write_tokens"]


def write_tokens(path: Path, entries: dict[str, tuple[str, str]]) -> None:
    """entries: token -> (principal, comma-separated scopes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {s} {hash_token(t)}\n" for t, (p, s) in entries.items()))
    path.chmod(0o600)
