"""The SQLite store of the task queue (synchronous; the queue runs it in a worker thread).

- WAL journal, ``synchronous=FULL`` by default: a submit is fsynced before it is
  acknowledged, so it survives a process kill and a power cut alike. ``normal``
  survives a process kill only (faster; a setting).
- The schema is versioned with ``PRAGMA user_version`` and migrated forward at open
  (:mod:`triomcp.taskqueue.schema`, which also maps rows to tasks and back).
- Every change is one ``BEGIN IMMEDIATE`` transaction that reads the row, applies
  the pure transition from :mod:`triomcp.taskqueue.machine` and writes it back, so
  a claim is atomic and nothing is ever half-written.
- sqlite errors become :class:`~triomcp.errors.StoreUnavailable` (disk full,
  database locked, I/O error) with nothing stored; a failed constraint becomes
  :class:`~triomcp.errors.StoreIntegrityError` (a bug in what was written: trying
  again cannot help, so it must never read as the disk being unavailable).

Size: a little over 300 lines: one transaction per queue operation (submit, change, claim one or
many, expire, the counts the mesh announces, list, prune), each a short SQL statement and a
transition of the state machine.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from triomcp import _cursor
from triomcp._owner import tagged
from triomcp._retry import Backoff
from triomcp.errors import (
    IdempotencyConflict,
    StoreIntegrityError,
    StoreUnavailable,
    TaskNotFound,
    TaskQueueError,
)
from triomcp.taskqueue import machine, schema
from triomcp.taskqueue.model import FINISHED, Task, TaskState
from triomcp.taskqueue.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store"]

T = TypeVar("T")


def _store_error(exc: sqlite3.Error, context: str) -> TaskQueueError:
    """The translation of a sqlite3 error raised while writing, nothing stored."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreIntegrityError(f"task queue database refused the write, nothing was stored: {exc}")
    return StoreUnavailable(f"{context}, nothing was stored: {exc}")


class Store:
    """One connection to one queue database; use from one thread at a time."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", owner_tag: str = "") -> None:
        self.path = path
        self.owner_tag = owner_tag
        """In front of every new task id (:mod:`triomcp._owner`): a mesh finds the queue holding it."""
        self._depth = 0
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            schema.migrate(self._db, path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the task queue database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # -- plumbing -----------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested use becomes a savepoint (so a batch can refuse one operation)."""
        if self._depth:
            with self._savepoint():
                yield self._db
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

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        """A transaction inside the open one: on any error it alone is undone."""
        name = f"op{self._depth}"
        self._db.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
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
        row = db.execute(f"{schema.SELECT} WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {task_id}")
        return schema.decode(row)

    def _write(self, db: sqlite3.Connection, task: Task) -> None:
        """Write the columns a transition can change (the payload and identity never change)."""
        db.execute(schema.UPDATE, schema.update_args(task))

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
                    f"{schema.SELECT} WHERE coalesce(submitter, '') = ? AND idempotency_key = ?",
                    (submitter or "", idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = schema.decode(row)
                    if existing.type != task_type or schema.dumps(existing.payload) != schema.dumps(payload):
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used for task {existing.id} "
                            "with a different type or payload"
                        )
                    return existing, False
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM tasks").fetchone()[0]
            task = Task(
                id=tagged(self.owner_tag, uuid.uuid4().hex), type=task_type, payload=payload, priority=priority, seq=seq,
                state=TaskState.QUEUED, submitter=submitter, idempotency_key=idempotency_key,
                max_attempts=max_attempts, created_at=now, updated_at=now, version=1, expires_at=expires_at,
            )
            db.execute(schema.INSERT, schema.encode(task))
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
        tasks, retry_at, _ = self.claim_many(holder, task_types, count=1, lease_seconds=lease_seconds, now=now)
        return (tasks[0] if tasks else None), retry_at

    def claim_many(
        self, holder: str, task_types: Sequence[str] | None, *, count: int, lease_seconds: float, now: float,
        count_remaining: bool = False,
    ) -> tuple[list[Task], float | None, int | None]:
        """Lease up to ``count`` of the best eligible tasks in one transaction (each its own lease).

        Returns ``(tasks, retry_at, remaining)``: ``retry_at`` when the next retry of these types comes
        due if none was claimable now; ``remaining``, with ``count_remaining``, how many claimable now
        are left after this claim."""
        with self._transaction() as db:
            where = "state = 'queued'"
            args: list[Any] = []
            if task_types is not None:
                where += f" AND type IN ({', '.join('?' * len(task_types))})"
                args.extend(task_types)
            rows = db.execute(f"{schema.SELECT} WHERE {where} AND not_before <= ? "
                              "ORDER BY priority DESC, seq LIMIT ?", [*args, now, max(1, count)]).fetchall()
            remaining = None
            if count_remaining:
                remaining = db.execute(f"SELECT count(*) FROM tasks WHERE {where} AND not_before <= ?",
                                       [*args, now]).fetchone()[0] - len(rows)
            if not rows:
                later = db.execute(f"SELECT min(not_before) FROM tasks WHERE {where} AND not_before > ?",
                                   [*args, now]).fetchone()[0]
                return [], later, remaining
            tasks = []
            for row in rows:
                task = machine.transition(schema.decode(row), "claim", now=now, holder=holder,
                                          lease_seconds=lease_seconds)
                self._write(db, task)
                tasks.append(task)
            return tasks, None, remaining

    def claimable(self, *, now: float) -> tuple[dict[str, int], float | None]:
        """Tasks claimable now, by type, and the earliest instant a queued task not yet due comes due."""
        def read(db: sqlite3.Connection) -> tuple[dict[str, int], float | None]:
            rows = db.execute("SELECT type, count(*) FROM tasks WHERE state = 'queued' AND not_before <= ? "
                              "GROUP BY type", (now,)).fetchall()
            later = db.execute("SELECT min(not_before) FROM tasks WHERE state = 'queued' AND not_before > ?",
                               (now,)).fetchone()[0]
            return {str(t): int(n) for t, n in rows}, later

        return self._read(read)

    def expire_leases(self, *, now: float, backoff: Backoff) -> list[Task]:
        """Recover every lease that has run out."""
        with self._transaction() as db:
            rows = db.execute(f"{schema.SELECT} WHERE state = 'leased' AND lease_expires_at <= ?",
                              (now,)).fetchall()
            changed = [machine.expire(schema.decode(row), now=now, backoff=backoff) for row in rows]
            for task in changed:
                self._write(db, task)
            return changed

    def next_deadlines(self) -> tuple[float | None, float | None]:
        """(earliest lease expiry, earliest not_before of a queued task in the future)."""
        def read(db: sqlite3.Connection) -> tuple[float | None, float | None]:
            lease = db.execute("SELECT min(lease_expires_at) FROM tasks WHERE state = 'leased'").fetchone()[0]
            retry = db.execute(
                "SELECT min(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0").fetchone()[0]
            return lease, retry

        return self._read(read)

    def list_tasks(
        self,
        *,
        state: str | None = None,
        task_type: str | None = None,
        submitter: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Task], str | None]:
        """Newest first; the cursor is opaque."""
        conditions = {"state = ?": state, "type = ?": task_type, "submitter = ?": submitter,
                      "seq < ?": None if cursor is None else _cursor.decode("s", cursor)}
        used = {condition: value for condition, value in conditions.items() if value is not None}
        query = f"{schema.SELECT} WHERE {' AND '.join(['1 = 1', *used])} ORDER BY seq DESC LIMIT ?"
        rows = self._read(lambda db: db.execute(query, [*used.values(), limit + 1]).fetchall())
        tasks = [schema.decode(r) for r in rows[:limit]]
        next_cursor = _cursor.encode("s", tasks[-1].seq) if len(rows) > limit and tasks else None
        return tasks, next_cursor

    def count_by_state(self) -> dict[str, int]:
        query = "SELECT state, count(*) FROM tasks GROUP BY state"
        return self._read(lambda db: dict(db.execute(query).fetchall()))

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
                cur = db.execute(f"DELETE FROM tasks WHERE expires_at < ? AND state IN ({states})",
                                 (now, *finished))
                count += int(cur.rowcount)
            return count
