"""The shared store suite on PostgreSQL (claims use SELECT ... FOR UPDATE SKIP LOCKED), plus PostgreSQL-only
checks: concurrent migrations, timestamptz columns, an unreachable server."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from autoft_service.errors import BackendUnavailable
from autoft_service.store import JobStore, current_revision, init_db
from autoft_service.store.db import PG_POOL_SIZE
from tests.conftest import PG_ADMIN_DSN
from tests.suites.store import StoreCases
from tests.suites.store_helpers import spec

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


def _count_pings(store: JobStore) -> list[int]:
    """A one-item list counting the pings the store's engine sends from now on."""
    pings = [0]
    dialect = store.db.engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings[0] += 1
        return ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def test_pool_reuses_connections_and_pings_only_idle_ones(postgres_url: str) -> None:
    init_db(postgres_url)
    store = JobStore(postgres_url, ping_after_idle_s=0.3)
    try:
        store.list_jobs("acme")
        pings = _count_pings(store)
        backends = set()
        for _ in range(20):  # a busy API: back-to-back checkouts, no ping, one server process
            with store.db.reader() as conn:
                backends.add(conn.execute(text("SELECT pg_backend_pid()")).scalar())
        assert pings == [0] and len(backends) == 1

        time.sleep(0.5)  # idle past the threshold: the next checkout pings first
        store.list_jobs("acme")
        assert pings == [1]
    finally:
        store.close()


def test_a_connection_killed_while_idle_is_replaced(postgres_url: str) -> None:
    init_db(postgres_url)
    store = JobStore(postgres_url, ping_after_idle_s=0.1)
    try:
        with store.db.reader() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.3)
        assert store.list_jobs("acme") == ([], 0)  # the dead connection failed its ping, a new one answered
    finally:
        store.close()


def test_the_pool_does_not_open_and_close_overflow_connections() -> None:
    store = JobStore("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        pool = store.db.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == PG_POOL_SIZE and pool._max_overflow == 0
    finally:
        store.close()


def test_async_reads_replace_a_connection_killed_while_idle(postgres_url: str) -> None:
    init_db(postgres_url)
    store = JobStore(postgres_url, ping_after_idle_s=0.1)
    job = store.create_job("acme", spec("a"))[0]

    async def read_kill_read() -> None:
        assert (await store.get_job_async("acme", job.id)).id == job.id
        assert store.aio is not None
        [[(pid,)]] = await store.aio.fetch([("SELECT pg_backend_pid()", {}, ())])
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.sleep(0.3)
        assert (await store.get_job_async("acme", job.id)).id == job.id  # pinged, replaced, answered

    try:
        asyncio.run(read_kill_read())
    finally:
        store.close()


def test_async_reads_of_an_unreachable_server_are_backend_unavailable() -> None:
    store = JobStore("postgresql+psycopg://postgres@127.0.0.1:1/none")

    async def read() -> None:
        with pytest.raises(BackendUnavailable) as e:
            await store.get_job_async("acme", "x")
        assert isinstance(e.value.__cause__, psycopg.OperationalError)
        with pytest.raises(BackendUnavailable):
            await store.list_job_summaries_async("acme")

    try:
        asyncio.run(read())
    finally:
        store.close()
