"""Peers remembered across restarts: ``<data_dir>/peers.db`` (SQLite).

A node records the addresses that worked (a dial it made) or that a peer told it (peer
exchange: its own, and those of the peers it is connected to), and at start redials the
remembered peers it still authorizes, up to ``p2p.connections_low`` of them: a restarted node
finds its mesh again without a bootstrap list. The others are dialed on demand
(``Node.ensure_connected``) from what is remembered here. Blocking SQLite calls run in a worker
thread; reads are served from memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["PEERS_FILE", "KnownPeers"]

PEERS_FILE = "peers.db"
MAX_ADDRS = 8


class KnownPeers:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS peers (peer_id TEXT PRIMARY KEY, addrs TEXT NOT NULL, "
                         "last_seen REAL NOT NULL)")
        self._cache: dict[str, list[str]] = dict(self._load())

    def _load(self) -> list[tuple[str, list[str]]]:
        rows = self._db.execute("SELECT peer_id, addrs FROM peers ORDER BY last_seen DESC").fetchall()
        out = []
        for peer_id, addrs in rows:
            try:
                parsed = json.loads(addrs)
            except ValueError:
                continue
            if isinstance(parsed, list):
                out.append((str(peer_id), [str(a) for a in parsed if isinstance(a, str)]))
        return out

    def _merged(self, peer_id: str, addrs: list[str]) -> list[str]:
        return list(dict.fromkeys([*addrs, *self._cache.get(peer_id, [])]))[:MAX_ADDRS]

    def would_change(self, peer_id: str, addrs: list[str]) -> bool:
        """Would :meth:`remember` write anything (no I/O: callers skip the thread hop when not)?"""
        return self._merged(peer_id, addrs) != self._cache.get(peer_id)

    def remember(self, peer_id: str, addrs: list[str]) -> bool:
        """Record addresses for a peer (most recent first); False when nothing changed."""
        merged = self._merged(peer_id, addrs)
        if merged == self._cache.get(peer_id):
            return False
        with self._lock:
            self._db.execute("INSERT INTO peers (peer_id, addrs, last_seen) VALUES (?, ?, ?) ON CONFLICT(peer_id) "
                             "DO UPDATE SET addrs = excluded.addrs, last_seen = excluded.last_seen",
                             (peer_id, json.dumps(merged), time.time()))
            self._cache[peer_id] = merged
        return True

    def forget(self, peer_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))
            self._cache.pop(peer_id, None)

    def peers(self) -> dict[str, list[str]]:
        return dict(self._cache)

    def addrs(self, peer_id: str) -> list[str]:
        """The addresses remembered for ``peer_id``, most recent first."""
        return list(self._cache.get(peer_id, ()))

    def close(self) -> None:
        with self._lock:
            self._db.close()
