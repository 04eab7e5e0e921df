"""The shared store suite on SQLite: a fresh migrated database file per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suites.store import clock, open_store, store  # noqa: F401  (the suite's fixtures)
from tests.suites.store_helpers import migrated_sqlite_template, sqlite_copy


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite_template(tmp_path_factory.mktemp("store-template"))


@pytest.fixture
def store_url(sqlite_template: Path, tmp_path: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path)
