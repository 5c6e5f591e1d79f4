"""The SQLite store on real files."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from pathlib import Path
from unittest import mock

import pytest

from triomcp._retry import Backoff
from triomcp.errors import (
    IdempotencyConflict,
    InvalidTransition,
    LeaseLost,
    StoreIntegrityError,
    StoreUnavailable,
)
from triomcp.taskqueue import machine, schema
from triomcp.taskqueue.model import Task, TaskState
from triomcp.taskqueue.store import SCHEMA_VERSION, Store


def submit(store: Store, task_type: str = "x", payload: object = None, **kw: object) -> object:
    args = {"priority": 0, "idempotency_key": None, "max_attempts": 3, "submitter": None, "now": 1.0}
    args.update(kw)
    return store.submit(task_type, payload or {}, **args)[0]  # type: ignore[arg-type]


def test_priority_then_fifo(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    ids = [submit(store, payload={"n": i}, priority=p).id for i, p in enumerate([0, 5, 0, 5])]  # type: ignore[attr-defined]
    order = [store.claim("w", None, lease_seconds=10, now=2)[0].id for _ in range(4)]  # type: ignore[union-attr]
    assert order == [ids[1], ids[3], ids[0], ids[2]]
    assert store.claim("w", None, lease_seconds=10, now=2) == (None, None)


def test_claim_filters_by_type_and_backoff(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    a = submit(store, "a")
    assert store.claim("w", ["b"], lease_seconds=10, now=2) == (None, None)
    task, _ = store.claim("w", ["a"], lease_seconds=10, now=2)
    assert task is not None and task.id == a.id  # type: ignore[attr-defined]
    store.change(task.id, lambda t: machine.transition(t, "fail_retry", now=3, token=task.lease_token,
                                                      error={"code": "e"}, delay=100))
    assert store.claim("w", ["a"], lease_seconds=10, now=50) == (None, 103)  # tells when the retry is due
    assert store.claim("w", ["a"], lease_seconds=10, now=104)[0] is not None


def test_idempotency(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    first, created = store.submit("x", {"a": 1}, priority=0, idempotency_key="k", max_attempts=3, submitter="p",
                                  now=1)
    again, created_again = store.submit("x", {"a": 1}, priority=0, idempotency_key="k", max_attempts=3,
                                        submitter="p", now=2)
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.submit("x", {"a": 2}, priority=0, idempotency_key="k", max_attempts=3, submitter="p", now=3)
    other, created_other = store.submit("x", {"a": 2}, priority=0, idempotency_key="k", max_attempts=3,
                                        submitter="q", now=3)
    assert created_other and other.id != first.id  # keys are per submitter


def test_lease_holder_checks_and_nothing_written_on_refusal(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    submit(store)
    task, _ = store.claim("w", None, lease_seconds=10, now=2)
    assert task is not None
    with pytest.raises(LeaseLost):
        store.change(task.id, lambda t: machine.transition(t, "complete", now=3, token="nope", result=1))
    assert store.get(task.id).state is TaskState.LEASED


def test_expiry_recovery_to_queue_and_dead_letter(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    submit(store, max_attempts=1)
    submit(store, max_attempts=2)
    store.claim("w", None, lease_seconds=10, now=2)
    store.claim("w", None, lease_seconds=10, now=2)
    recovered = store.expire_leases(now=13, backoff=Backoff(base=0.0001, cap=0.0001))
    assert sorted(t.state.value for t in recovered) == ["dead", "queued"]
    assert store.expire_leases(now=14, backoff=Backoff()) == []


def test_reopen_keeps_everything_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    ids = {submit(store, payload={"n": i}).id for i in range(20)}  # type: ignore[attr-defined]
    store.close()
    again = Store(path)
    tasks, cursor = again.list_tasks(limit=100)
    assert {t.id for t in tasks} == ids and cursor is None
    assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreUnavailable, match="newer than this triomcp"):
        Store(path)


def test_list_filters_and_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    for i in range(7):
        submit(store, "a" if i % 2 else "b", submitter="p" if i < 5 else "q")
    seen = []
    cursor = None
    for _ in range(10):
        page, cursor = store.list_tasks(submitter="p", limit=2, cursor=cursor)
        seen += page
        if cursor is None:
            break
    assert len(seen) == 5 and [t.seq for t in seen] == sorted((t.seq for t in seen), reverse=True)
    assert {t.type for t in store.list_tasks(task_type="a", limit=50)[0]} == {"a"}
    with pytest.raises(ValueError):
        store.list_tasks(cursor="garbage")


def test_retention_prunes_only_old_finished_tasks(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    old = submit(store)
    submit(store)
    store.change(old.id, lambda t: machine.transition(t, "cancel", now=5))  # type: ignore[attr-defined]
    assert store.prune(finished_before=4) == 0
    assert store.prune(finished_before=6) == 1
    assert [t.state for t in store.list_tasks()[0]] == [TaskState.QUEUED]


def test_a_task_ttl_prunes_it_once_finished_never_while_it_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    finished = submit(store, expires_at=10.0)
    running = submit(store, expires_at=10.0)
    kept = submit(store)  # no TTL: the queue's retention applies
    store.change(finished.id, lambda t: machine.transition(t, "cancel", now=5))  # type: ignore[attr-defined]
    assert store.prune(finished_before=0, now=9.0) == 0  # not yet past its TTL
    assert store.prune(finished_before=0, now=11.0) == 1
    assert {t.id for t in store.list_tasks()[0]} == {running.id, kept.id}  # type: ignore[attr-defined]
    assert store.get(running.id).expires_at == 10.0  # type: ignore[attr-defined]


def test_version_1_databases_are_migrated(tmp_path: Path) -> None:
    import sqlite3 as sq

    from triomcp.taskqueue.schema import MIGRATIONS
    path = tmp_path / "old.db"
    db = sq.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(path)
    task = submit(store, expires_at=3.0)
    assert store.get(task.id).expires_at == 3.0  # type: ignore[attr-defined]


def test_disk_full_is_a_clear_error_and_nothing_is_half_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    submit(store)
    real = store._db

    class FullDisk:
        def __init__(self) -> None:
            self.calls = 0

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    with mock.patch.object(store, "_db", FullDisk()), pytest.raises(StoreUnavailable, match="disk is full"):
        submit(store, payload={"lost": True})
    tasks, _ = store.list_tasks()
    assert len(tasks) == 1
    submit(store, payload={"after": True})  # the store keeps working
    assert len(store.list_tasks()[0]) == 2


def test_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    try:
        store._db.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreUnavailable, match="locked"):
            submit(store)
    finally:
        other.execute("ROLLBACK")
        other.close()
    submit(store)
    assert len(store.list_tasks()[0]) == 1


def test_batch_commits_together_and_refuses_one_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    task = submit(store)
    ops = [
        lambda: submit(store, payload={"n": 1}),
        lambda: store.change(task.id, lambda t: machine.transition(t, "complete", now=2, token="x", result=1)),  # type: ignore[attr-defined]
        lambda: submit(store, payload={"n": 2}),
    ]
    results = store.batch(ops)
    assert [ok for ok, _ in results] == [True, False, True]
    assert isinstance(results[1][1], InvalidTransition)
    assert len(store.list_tasks()[0]) == 3


def test_a_task_without_a_payload_is_stored_with_a_null_payload(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    task, created = store.submit("x", None, priority=0, idempotency_key="k", max_attempts=3, submitter=None, now=1.0)
    assert created and task.payload is None
    assert store.get(task.id).payload is None
    again, created = store.submit("x", None, priority=0, idempotency_key="k", max_attempts=3, submitter=None, now=2.0)
    assert again.id == task.id and not created
    raw = store._db.execute("SELECT payload FROM tasks WHERE id = ?", (task.id,)).fetchone()[0]
    assert raw == "null"  # JSON null in a NOT NULL column
    with pytest.raises(IdempotencyConflict):
        submit(store, payload={"other": 1}, idempotency_key="k")


def test_a_failed_constraint_is_an_integrity_error_never_store_unavailable(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    fixed = uuid.UUID(int=7)
    with mock.patch("triomcp.taskqueue.store.uuid.uuid4", return_value=fixed):
        first = submit(store)
        with pytest.raises(StoreIntegrityError, match="UNIQUE constraint failed") as refused:
            submit(store)  # the same id again: the primary key refuses it
        results = store.batch([lambda: submit(store), lambda: store.get(first.id)])  # type: ignore[attr-defined]
    assert not isinstance(refused.value, StoreUnavailable) and refused.value.code == "store_integrity_error"
    assert isinstance(results[0][1], StoreIntegrityError) and results[1] == (True, store.get(first.id))  # type: ignore[attr-defined]
    assert len(store.list_tasks()[0]) == 1
    submit(store)  # the store keeps working
    assert len(store.list_tasks()[0]) == 2


def test_a_task_is_stored_and_read_back_column_for_column(tmp_path: Path) -> None:
    every_field = Task(
        id="t", type="x", payload={"ü": [1, None]}, priority=3, seq=7, state=TaskState.LEASED, submitter="p",
        idempotency_key="k", attempts=2, max_attempts=5, not_before=1.5, lease_holder="w", lease_token="tok",
        lease_expires_at=9.5, cancel_requested=True, progress=0.25, progress_message="a quarter",
        result={"r": 1}, error={"code": "e"}, created_at=1.0, updated_at=2.0, finished_at=3.0, version=4,
        expires_at=8.0, input={"requests": {}, "responses": {"q": "a"}},
    )
    assert set(schema.COLUMNS) == {f.name for f in dataclasses.fields(Task)}  # one column per field, no more
    assert schema.decode(schema.encode(every_field)) == every_field
    assert schema.decode(schema.encode(dataclasses.replace(every_field, payload=None))).payload is None
    store = Store(tmp_path / "q.db")
    with store._transaction() as db:
        db.execute(schema.INSERT, schema.encode(every_field))
    assert store.get("t") == every_field
    changed = dataclasses.replace(every_field, state=TaskState.QUEUED, lease_holder=None, lease_token=None,
                                  lease_expires_at=None, cancel_requested=False, result=None, version=5)
    assert store.change("t", lambda _: changed) == changed and store.get("t") == changed

