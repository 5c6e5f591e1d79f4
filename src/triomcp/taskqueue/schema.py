"""The queue database's schema, its migrations, and the one mapping between a row and a :class:`Task`.

The schema is versioned with ``PRAGMA user_version`` and migrated forward at open, one
transaction per migration. A column is listed once, in :data:`COLUMNS`; the INSERT, the
SELECT and the UPDATE of the columns a transition may change are built from it, and each
column is encoded and decoded by one rule (:func:`encode`, :func:`decode`), applied only to the
columns that have one (the others are stored as they are: the conversion runs for every row the
queue reads or writes, in the database thread).
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from triomcp.errors import StoreUnavailable
from triomcp.taskqueue.model import Task, TaskState

__all__ = [
    "COLUMNS", "INSERT", "MIGRATIONS", "MUTABLE", "SCHEMA_VERSION", "SELECT", "UPDATE", "decode", "dumps",
    "encode", "migrate", "update_args",
]

MIGRATIONS: list[str] = [
    # 1: the tasks table
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        submitter TEXT,
        idempotency_key TEXT,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        not_before REAL NOT NULL,
        lease_holder TEXT,
        lease_token TEXT,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL,
        progress REAL,
        progress_message TEXT,
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        version INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX tasks_idempotency ON tasks (coalesce(submitter, ''), idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX tasks_claim ON tasks (state, priority DESC, seq) WHERE state = 'queued';
    CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'leased';
    CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
    """,
    # 2: a per-task time-to-live (MCP tasks): a finished task is pruned once it has passed
    """
    ALTER TABLE tasks ADD COLUMN expires_at REAL;
    CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
    """,
    # 3: input a running handler asked for (a task WAITING for answers, and the answers so far)
    """
    ALTER TABLE tasks ADD COLUMN input TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

COLUMNS = (
    "id", "seq", "type", "payload", "priority", "state", "submitter", "idempotency_key", "attempts",
    "max_attempts", "not_before", "lease_holder", "lease_token", "lease_expires_at", "cancel_requested",
    "progress", "progress_message", "result", "error", "created_at", "updated_at", "finished_at", "version",
    "expires_at", "input",
)
MUTABLE = ("state", "attempts", "not_before", "lease_holder", "lease_token", "lease_expires_at",
           "cancel_requested", "progress", "progress_message", "result", "error", "updated_at", "finished_at",
           "version", "input")
"""The columns a transition can change (the payload and identity never change)."""

SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
INSERT = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
UPDATE = f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in MUTABLE)} WHERE id = ?"


def dumps(value: Any) -> str:
    """The one JSON form of a stored value (compact, keys sorted: equal values compare equal as text)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _loads_or_none(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _same(value: Any) -> Any:
    return value


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "payload": dumps,  # NOT NULL: no payload is stored as JSON null
    "result": _json_or_null,
    "error": _json_or_null,
    "input": _json_or_null,
    "state": lambda state: state.value,
    "cancel_requested": int,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "payload": _loads_or_none,
    "result": _loads_or_none,
    "error": _loads_or_none,
    "input": _loads_or_none,
    "state": TaskState,
    "cancel_requested": bool,
}


def _codec(columns: Sequence[str], rules: dict[str, Callable[[Any], Any]]) -> list[tuple[int, Callable[[Any], Any]]]:
    """The positions in ``columns`` that have a rule, with it (every other column is stored as is)."""
    return [(i, rules[column]) for i, column in enumerate(columns) if column in rules]


_READ_ALL = operator.attrgetter(*COLUMNS)
_READ_MUTABLE = operator.attrgetter(*MUTABLE)
_ENCODE_ALL = _codec(COLUMNS, _ENCODERS)
_ENCODE_MUTABLE = _codec(MUTABLE, _ENCODERS)
_DECODE = _codec(COLUMNS, _DECODERS)


def encode(task: Task) -> tuple[Any, ...]:
    """The values of every column of ``task``, as stored (for :data:`INSERT`)."""
    values = list(_READ_ALL(task))
    for i, rule in _ENCODE_ALL:
        values[i] = rule(values[i])
    return tuple(values)


def update_args(task: Task) -> tuple[Any, ...]:
    """The parameters of :data:`UPDATE` for ``task``."""
    values = list(_READ_MUTABLE(task))
    for i, rule in _ENCODE_MUTABLE:
        values[i] = rule(values[i])
    values.append(task.id)
    return tuple(values)


def decode(row: Sequence[Any]) -> Task:
    """The task of a row read with :data:`SELECT`."""
    values = list(row)
    for i, rule in _DECODE:
        values[i] = rule(values[i])
    return Task(**dict(zip(COLUMNS, values, strict=True)))


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database at ``path`` to :data:`SCHEMA_VERSION` (refuses a newer one)."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"{path} has schema version {current}, newer than this triomcp ({SCHEMA_VERSION}); "
            "upgrade triomcp or restore the backup that matches it"
        )
    for version in range(current, SCHEMA_VERSION):
        # One script per migration: it runs in its own transaction, with the version bump.
        db.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; PRAGMA user_version = {version + 1}; COMMIT;")
