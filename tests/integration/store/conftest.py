"""The shared store suite on PostgreSQL: a fresh database per test, migrated by the store itself."""

from __future__ import annotations

import pytest

from autoft_service.store import init_db
from tests.suites.store import clock, open_store, store  # noqa: F401  (the suite's fixtures)


@pytest.fixture
def store_url(postgres_url: str) -> str:
    init_db(postgres_url)
    return postgres_url
