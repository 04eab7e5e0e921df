"""The shared store suite on PostgreSQL (claims use SELECT ... FOR UPDATE SKIP LOCKED), plus PostgreSQL-only
checks: concurrent migrations, timestamptz columns, an unreachable server."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from autoft_service.errors import BackendUnavailable
from autoft_service.store import JobStore, current_revision, init_db
from tests.suites.store import StoreCases

pytestmark = pytest.mark.integration


class TestPostgresStore(StoreCases):
    pass


def test_concurrent_migrations_are_serialised(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            init_db(postgres_url)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store = JobStore(postgres_url)
    try:
        assert current_revision(store.db.engine) == "0001"
        with store.db.engine.connect() as conn:
            kind = conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns WHERE table_name='jobs' AND column_name='created_at'"
                )
            ).scalar()
        assert kind == "timestamp with time zone"
    finally:
        store.close()


def test_unreachable_server_is_backend_unavailable() -> None:
    store = JobStore("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(BackendUnavailable) as e:
            store.list_jobs("acme")
        assert isinstance(e.value.__cause__, OperationalError)
    finally:
        store.close()
