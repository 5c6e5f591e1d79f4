"""The node's Ed25519 identity, persisted in the data dir (same peer id across restarts)."""

from __future__ import annotations

import os
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from triomcp.errors import ConfigError

__all__ = ["CLI_IDENTITY_FILE", "FRONTEND_IDENTITY_FILE", "IDENTITY_FILE", "load_or_create_identity",
           "peer_id_of"]

IDENTITY_FILE = "identity.key"
"""A node's identity (``triomcp serve`` or ``triomcp node``), in its data dir."""
CLI_IDENTITY_FILE = "identity-cli.key"
"""The CLI's identity in the same data dir (the node always allows it)."""
FRONTEND_IDENTITY_FILE = "identity-frontend.key"
"""The HTTP server's identity when it fronts a standalone node (``p2p.mode = "local-node"``)."""


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the key at ``path``, or create one (mode 0600, written atomically; its directory, the
    data dir, 0700 when this creates it).

    A node reads its identity once per start (``build_services`` keeps it; ``open_node`` takes it
    as ``key_pair``), so the owner tag of the ids it mints and its peer id come from one key."""
    if path.exists():
        try:
            return load_identity(path)
        except ValueError as exc:
            raise ConfigError(f"the identity file {path} is corrupt: {exc}; restore it from a backup") from exc
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    tmp = path.with_suffix(".tmp")
    save_identity(key_pair, tmp)
    os.replace(tmp, path)
    return key_pair


def peer_id_of(key_pair: KeyPair) -> str:
    return ID.from_pubkey(key_pair.public_key).to_base58()
