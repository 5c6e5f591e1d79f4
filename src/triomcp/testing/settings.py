"""Settings for a node under test: its data in a temporary folder, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triomcp.settings import Settings

__all__ = ["make_settings"]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A node's settings for a test: data under ``tmp_path / "data"``, libp2p off (so nothing listens
    on a socket), the task queue on (tools with task support run as durable tasks); every other key
    at its default. ``overrides`` are :class:`~triomcp.settings.Settings` keys; a section given as a
    dict is merged into these defaults (``taskqueue={"lease_seconds": 2}`` keeps the queue on)."""
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "p2p": {"enabled": False},
        "taskqueue": {"enabled": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Settings(**base)
