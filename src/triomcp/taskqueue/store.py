"""The SQLite store of the task queue (synchronous; the queue runs it in a worker thread).

- WAL journal, ``synchronous=FULL`` by default: a submit is fsynced before it is
  acknowledged, so it survives a process kill and a power cut alike. ``normal``
  survives a process kill only (faster; a setting).
- The schema is versioned with ``PRAGMA user_version`` and migrated forward at open.
- Every change is one ``BEGIN IMMEDIATE`` transaction that reads the row, applies
  the pure transition from :mod:`triomcp.taskqueue.machine` and writes it back, so
  a claim is atomic and nothing is ever half-written.
- sqlite errors become :class:`~triomcp.errors.StoreUnavailable` (disk full,
  database locked, I/O error) with nothing stored; a failed constraint becomes
  :class:`~triomcp.errors.StoreIntegrityError` (a bug in what was written: trying
  again cannot help, so it must never read as the disk being unavailable).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from triomcp.errors import (
    IdempotencyConflict,
    StoreIntegrityError,
    StoreUnavailable,
    TaskNotFound,
    TaskQueueError,
)
from triomcp.taskqueue import machine
from triomcp.taskqueue.model import FINISHED, Task, TaskState

__all__ = ["SCHEMA_VERSION", "Store", "unavailable_delay"]

UNAVAILABLE_RETRY_CAP = 5.0
"""Longest wait before trying the database again after it was unavailable (disk full, locked)."""


def unavailable_delay(failures: int, *, cap: float = UNAVAILABLE_RETRY_CAP) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (of the database, or of a peer):
    50 ms times 2 ** failures, capped at ``cap``."""
    return min(cap, 0.05 * 2 ** failures)

T = TypeVar("T")

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
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
_JSON_COLUMNS = ("payload", "result", "error", "input")
_MUTABLE = ("state", "attempts", "not_before", "lease_holder", "lease_token", "lease_expires_at", "cancel_requested",
            "progress", "progress_message", "result", "error", "updated_at", "finished_at", "version", "input")
_UPDATE = f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE id = ?"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _store_error(exc: sqlite3.Error, context: str) -> TaskQueueError:
    """The translation of a sqlite3 error raised while writing, nothing stored."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreIntegrityError(f"task queue database refused the write, nothing was stored: {exc}")
    return StoreUnavailable(f"{context}, nothing was stored: {exc}")


def _row_to_task(row: Sequence[Any]) -> Task:
    values = dict(zip(COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column]) if values[column] is not None else None
    values["state"] = TaskState(values["state"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Task(**values)


def _task_to_row(task: Task) -> tuple[Any, ...]:
    values = []
    for column in COLUMNS:
        value = getattr(task, column)
        if column == "payload":
            value = _dumps(value)  # a column NOT NULL: no payload is stored as JSON null
        elif column in _JSON_COLUMNS:
            value = _dumps(value) if value is not None else None
        elif column == "state":
            value = value.value
        elif column == "cancel_requested":
            value = int(value)
        values.append(value)
    return tuple(values)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode("ascii")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        if not text.startswith("s:"):
            raise ValueError(text)
        return int(text[2:])
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


class Store:
    """One connection to one queue database; use from one thread at a time."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._depth = 0
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the task queue database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # -- plumbing -----------------------------------------------------------------------
    def _migrate(self) -> None:
        current = self._db.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path} has schema version {current}, newer than this triomcp ({SCHEMA_VERSION}); "
                "upgrade triomcp or restore the backup that matches it"
            )
        for version in range(current, SCHEMA_VERSION):
            # One script per migration: it runs in its own transaction, with the version bump.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; PRAGMA user_version = {version + 1}; COMMIT;"
            )

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested use becomes a savepoint (so a batch can refuse one operation)."""
        if self._depth:
            name = f"op{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self._db
            except Exception as exc:
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(exc, "task queue database error") from exc
                raise
            else:
                self._db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"task queue database unavailable, nothing was stored: {exc}") from exc
        self._depth = 1
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback_quietly()
            raise _store_error(exc, "task queue database error") from exc
        except Exception:  # a transition refused (LeaseLost...): nothing is written
            self._rollback_quietly()
            raise
        finally:
            self._depth = 0
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback_quietly()
            raise _store_error(exc, "task queue commit failed") from exc

    def batch(self, operations: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run several operations in one transaction (one fsync): ``(ok, result or exception)`` each.

        Each operation runs in its own savepoint, so one refused operation changes nothing
        while the others commit. If the commit itself fails, every operation failed.
        """
        results: list[tuple[bool, Any]] = []
        try:
            with self._transaction():
                for operation in operations:
                    try:
                        results.append((True, operation()))
                    except Exception as exc:
                        results.append((False, exc))
        except (StoreUnavailable, StoreIntegrityError) as exc:
            return [(False, exc)] * len(operations)
        return results

    def _rollback_quietly(self) -> None:
        with suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._db)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"task queue database unavailable: {exc}") from exc

    def _get(self, db: sqlite3.Connection, task_id: str) -> Task:
        row = db.execute(f"{_SELECT} WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {task_id}")
        return _row_to_task(row)

    def _write(self, db: sqlite3.Connection, task: Task) -> None:
        """Write the columns a transition can change (the payload and identity never change)."""
        db.execute(
            _UPDATE,
            (
                task.state.value, task.attempts, task.not_before, task.lease_holder, task.lease_token,
                task.lease_expires_at, int(task.cancel_requested), task.progress, task.progress_message,
                None if task.result is None else _dumps(task.result),
                None if task.error is None else _dumps(task.error),
                task.updated_at, task.finished_at, task.version,
                None if task.input is None else _dumps(task.input), task.id,
            ),
        )

    # -- operations ------------------------------------------------------------------------
    def submit(
        self,
        task_type: str,
        payload: Any,
        *,
        priority: int,
        idempotency_key: str | None,
        max_attempts: int,
        submitter: str | None,
        now: float,
        expires_at: float | None = None,
    ) -> tuple[Task, bool]:
        """Store a new task (or find the one with the same idempotency key); returns (task, created)."""
        with self._transaction() as db:
            if idempotency_key is not None:
                row = db.execute(
                    f"{_SELECT} WHERE coalesce(submitter, '') = ? AND idempotency_key = ?",
                    (submitter or "", idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = _row_to_task(row)
                    if existing.type != task_type or _dumps(existing.payload) != _dumps(payload):
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used for task {existing.id} "
                            "with a different type or payload"
                        )
                    return existing, False
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM tasks").fetchone()[0]
            task = Task(
                id=uuid.uuid4().hex, type=task_type, payload=payload, priority=priority, seq=seq,
                state=TaskState.QUEUED, submitter=submitter, idempotency_key=idempotency_key,
                max_attempts=max_attempts, created_at=now, updated_at=now, version=1, expires_at=expires_at,
            )
            db.execute(f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       _task_to_row(task))
            return task, True

    def get(self, task_id: str) -> Task:
        return self._read(lambda db: self._get(db, task_id))

    def change(self, task_id: str, apply: Callable[[Task], Task]) -> Task:
        """Read, apply a pure transition, write back: one transaction."""
        with self._transaction() as db:
            task = apply(self._get(db, task_id))
            self._write(db, task)
            return task

    def claim(
        self, holder: str, task_types: Sequence[str] | None, *, lease_seconds: float, now: float
    ) -> tuple[Task | None, float | None]:
        """Lease the best eligible task (highest priority, then oldest).

        Returns ``(task, None)``, or ``(None, when the next retry of these types comes due)``.
        """
        with self._transaction() as db:
            where = "state = 'queued'"
            args: list[Any] = []
            if task_types is not None:
                where += f" AND type IN ({', '.join('?' * len(task_types))})"
                args.extend(task_types)
            row = db.execute(f"{_SELECT} WHERE {where} AND not_before <= ? ORDER BY priority DESC, seq LIMIT 1",
                             [*args, now]).fetchone()
            if row is None:
                later = db.execute(f"SELECT min(not_before) FROM tasks WHERE {where} AND not_before > ?",
                                   [*args, now]).fetchone()[0]
                return None, later
            task = machine.transition(_row_to_task(row), "claim", now=now, holder=holder, lease_seconds=lease_seconds)
            self._write(db, task)
            return task, None

    def expire_leases(self, *, now: float, backoff: machine.Backoff) -> list[Task]:
        """Recover every lease that has run out."""
        with self._transaction() as db:
            rows = db.execute(f"{_SELECT} WHERE state = 'leased' AND lease_expires_at <= ?", (now,)).fetchall()
            changed = [machine.expire(_row_to_task(row), now=now, backoff=backoff) for row in rows]
            for task in changed:
                self._write(db, task)
            return changed

    def next_deadlines(self) -> tuple[float | None, float | None]:
        """(earliest lease expiry, earliest not_before of a queued task in the future)."""
        def read(db: sqlite3.Connection) -> tuple[float | None, float | None]:
            lease = db.execute("SELECT min(lease_expires_at) FROM tasks WHERE state = 'leased'").fetchone()[0]
            retry = db.execute("SELECT min(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0").fetchone()[0]
            return lease, retry

        return self._read(read)

    def list(
        self,
        *,
        state: str | None = None,
        task_type: str | None = None,
        submitter: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Task], str | None]:
        """Newest first; the cursor is opaque."""
        query = f"{_SELECT} WHERE 1 = 1"
        args: list[Any] = []
        if state is not None:
            query += " AND state = ?"
            args.append(state)
        if task_type is not None:
            query += " AND type = ?"
            args.append(task_type)
        if submitter is not None:
            query += " AND submitter = ?"
            args.append(submitter)
        if cursor is not None:
            query += " AND seq < ?"
            args.append(decode_cursor(cursor))
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)
        rows = self._read(lambda db: db.execute(query, args).fetchall())
        tasks = [_row_to_task(r) for r in rows[:limit]]
        next_cursor = encode_cursor(tasks[-1].seq) if len(rows) > limit and tasks else None
        return tasks, next_cursor

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(tasks by state, unfinished tasks by type)."""
        def read(db: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
            by_state = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
            by_type = dict(db.execute(
                "SELECT type, count(*) FROM tasks WHERE state IN ('queued', 'leased') GROUP BY type").fetchall())
            return by_state, by_type

        return self._read(read)

    def prune(self, *, finished_before: float, now: float | None = None) -> int:
        """Delete finished tasks older than the retention, or past their own TTL; returns how many.

        A task past its TTL that has not finished is kept: work in flight is never dropped."""
        finished = tuple(s.value for s in FINISHED)
        states = ", ".join("?" * len(finished))
        with self._transaction() as db:
            cur = db.execute(f"DELETE FROM tasks WHERE finished_at < ? AND state IN ({states})",
                             (finished_before, *finished))
            count = int(cur.rowcount)
            if now is not None:
                cur = db.execute(f"DELETE FROM tasks WHERE expires_at < ? AND state IN ({states})", (now, *finished))
                count += int(cur.rowcount)
            return count
