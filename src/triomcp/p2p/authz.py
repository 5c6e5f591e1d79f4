"""Who may talk to this node: the ``authorized_peers`` file, like SSH's authorized_keys.

One peer id per line, optionally followed by a label; ``#`` starts a comment::

    12D3KooWQeXUU4zsCapeoMmAcCMxN9HAMrAj2PaiyPYaGtG6vB3K  worker-2 (rack 4)

The principal is the peer id that Noise authenticated; a peer not listed gets
"not authorized" for every request and nothing changes. The file is re-read
when it changes (its mtime), so ``triomcp peers authorize`` takes effect at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from libp2p.peer.id import ID

from triomcp.errors import ConfigError

__all__ = ["AuthorizedPeers", "validate_peer_id"]


def validate_peer_id(peer_id: str) -> str:
    try:
        ID.from_base58(peer_id)
    except Exception as exc:
        raise ConfigError(f"{peer_id!r} is not a peer id: {exc}") from None
    return peer_id


@dataclass(frozen=True)
class Entry:
    peer_id: str
    label: str


class AuthorizedPeers:
    def __init__(self, path: Path, *, always: set[str] | None = None, local_keys: list[Path] | None = None) -> None:
        self.path = path
        self.always = set(always or ())
        """Peers allowed without a line in the file."""
        self.local_keys = list(local_keys or [])
        """Identities in this node's data dir (the CLI's, an HTTP front end's): whoever can read the
        data dir is the operator of this machine and is always allowed."""
        self._mtime: float | None = None
        self._checked_at = -1.0
        self._entries: dict[str, Entry] = {}

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < 1.0:
            return
        self._checked_at = now
        for key in [k for k in self.local_keys if k.exists()]:
            from triomcp.p2p.identity import load_or_create_identity, peer_id_of

            self.always.add(peer_id_of(load_or_create_identity(key)))
            self.local_keys.remove(key)
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._entries, self._mtime = {}, None
            return
        if mtime == self._mtime and not force:
            return
        entries: dict[str, Entry] = {}
        for number, raw in enumerate(self.path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            peer_id, _, label = line.partition(" ")
            try:
                validate_peer_id(peer_id)
            except ConfigError as exc:
                raise ConfigError(f"{self.path}:{number}: {exc}") from None
            entries[peer_id] = Entry(peer_id, label.strip())
        self._entries, self._mtime = entries, mtime

    def is_authorized(self, peer_id: str) -> bool:
        if peer_id in self.always:
            return True
        self._reload()
        return peer_id in self._entries or peer_id in self.always

    def is_listed(self, peer_id: str) -> bool:
        """In the file itself (not just allowed implicitly, like the local CLI)."""
        self._reload()
        return peer_id in self._entries

    def entries(self) -> list[Entry]:
        self._reload(force=True)
        return sorted(self._entries.values(), key=lambda e: e.peer_id)

    def authorize(self, peer_id: str, label: str = "") -> bool:
        """Add a peer (atomically rewriting the file); False when it was already there."""
        validate_peer_id(peer_id)
        self._reload(force=True)
        if peer_id in self._entries:
            return False
        lines = self.path.read_text().splitlines() if self.path.exists() else [
            "# Peers allowed to submit, claim, complete and call tools on this node.",
            "# One base58 peer id per line, then an optional label.",
        ]
        lines.append(f"{peer_id} {label}".rstrip())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        self._reload(force=True)
        return True

    def revoke(self, peer_id: str) -> bool:
        self._reload(force=True)
        if peer_id not in self._entries or not self.path.exists():
            return False
        kept = [line for line in self.path.read_text().splitlines()
                if line.split("#", 1)[0].strip().partition(" ")[0] != peer_id]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(kept) + "\n")
        os.replace(tmp, self.path)
        self._reload(force=True)
        return True
