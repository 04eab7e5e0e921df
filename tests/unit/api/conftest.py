"""API test fixtures: an app on a fresh SQLite job store, a TestClient and API keys of two tenants."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from autoft_service.api import create_app
from autoft_service.settings import Settings
from autoft_service.store import JobStore
from tests.suites.store_helpers import migrated_sqlite_template, sqlite_copy


@pytest.fixture(scope="session")
def api_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite_template(tmp_path_factory.mktemp("api-template"))


@pytest.fixture
def store(api_sqlite_template: Path, tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(sqlite_copy(api_sqlite_template, tmp_path))
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path, max_body_bytes=4096)


@pytest.fixture
def app(settings: Settings, store: JobStore) -> FastAPI:
    return create_app(settings=settings, store=store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def acme(store: JobStore) -> dict[str, str]:
    """Auth headers of tenant ``acme``."""
    key, _ = store.create_api_key("acme", "tests")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def globex(store: JobStore) -> dict[str, str]:
    """Auth headers of tenant ``globex`` (sent as X-API-Key)."""
    key, _ = store.create_api_key("globex", "tests")
    return {"X-API-Key": key}
