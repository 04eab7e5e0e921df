"""Integration fixtures: a fresh PostgreSQL database per test on the server at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

#: libpq connection string of the maintenance database (trust auth on the CI host).
PG_ADMIN_DSN = os.environ.get("AUTOFT_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database ``autoft_test_<random>``, dropped after the test."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"autoft_test_{uuid.uuid4().hex[:12]}"

    def admin() -> psycopg.Connection:
        try:
            return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as e:
            pytest.fail(f"PostgreSQL is needed for this test ({PG_ADMIN_DSN}): {e}")

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        info = conninfo_to_dict(PG_ADMIN_DSN)
        auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
        yield f"postgresql+psycopg://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with admin() as conn:  # a fresh connection: the server may have restarted during the test
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
