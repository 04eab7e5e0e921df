"""The shared store suite on SQLite, plus what only SQLite has (pragmas, a missing file's directory)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from autoft_service.errors import BackendUnavailable, JobStateConflict
from autoft_service.store import TRANSITIONS, JobStore, current_revision, init_db, transition
from tests.suites.store import StoreCases


class TestSQLiteStore(StoreCases):
    pass


def test_sqlite_uses_wal_busy_timeout_and_foreign_keys(store: JobStore) -> None:
    with store.db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert (conn.execute(text("PRAGMA busy_timeout")).scalar() or 0) >= 1000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_init_db_creates_directories_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'jobs.db'}"
    init_db(url)
    init_db(url)
    store = JobStore(url)
    try:
        assert store.list_jobs(None) == ([], 0)
    finally:
        store.close()


def test_concurrent_init_db_is_serialised(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            init_db(url)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store = JobStore(url)
    try:
        assert current_revision(store.db.engine) == "0001"
    finally:
        store.close()


def test_unreachable_database_is_backend_unavailable(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path}")  # a directory cannot be opened as a database
    try:
        with pytest.raises(BackendUnavailable) as e:
            store.list_jobs("acme")
        assert isinstance(e.value.__cause__, OperationalError)
        with pytest.raises(BackendUnavailable):
            store.ping()
    finally:
        store.close()


def test_transition_table_is_the_single_source() -> None:
    assert transition("start", "queued") == "running"
    assert transition("extend", "succeeded") == "queued"
    for action, moves in TRANSITIONS.items():
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            if state in moves:
                assert transition(action, state) == moves[state]
            else:
                with pytest.raises(JobStateConflict):
                    transition(action, state)
    # Cancelled is final; a finished job never goes straight back to running (only through the queue).
    assert all("cancelled" not in moves for moves in TRANSITIONS.values())
    assert all(moves.get(s) != "running" for moves in TRANSITIONS.values() for s in ("succeeded", "failed"))
