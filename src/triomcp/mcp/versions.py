"""Protocol revisions served, and the two eras they fall into."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

__all__ = [
    "DEFAULT_LEGACY_VERSION",
    "LATEST_LEGACY_VERSION",
    "LATEST_MODERN_VERSION",
    "LEGACY_VERSIONS",
    "MODERN_VERSIONS",
    "SUPPORTED_VERSIONS",
    "Era",
    "era_of",
]


class Era(StrEnum):
    """Legacy: ``initialize`` handshake and sessions. Modern: stateless per-request envelope."""

    LEGACY = "legacy"
    MODERN = "modern"


LEGACY_VERSIONS: Final[tuple[str, ...]] = tuple(HANDSHAKE_PROTOCOL_VERSIONS)
MODERN_VERSIONS: Final[tuple[str, ...]] = tuple(MODERN_PROTOCOL_VERSIONS)
SUPPORTED_VERSIONS: Final[tuple[str, ...]] = (*LEGACY_VERSIONS, *MODERN_VERSIONS)
LATEST_LEGACY_VERSION: Final[str] = LEGACY_VERSIONS[-1]
LATEST_MODERN_VERSION: Final[str] = MODERN_VERSIONS[-1]
DEFAULT_LEGACY_VERSION: Final[str] = "2025-03-26"
"""Assumed when a legacy request carries no ``MCP-Protocol-Version`` header (spec rule)."""


def era_of(version: str) -> Era | None:
    """The era a served version belongs to, or None for a version we do not serve."""
    if version in MODERN_VERSIONS:
        return Era.MODERN
    if version in LEGACY_VERSIONS:
        return Era.LEGACY
    return None
