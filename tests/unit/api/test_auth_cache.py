"""The key → tenant cache: a hit costs no database query, only accepted keys are cached, and a revoked key
is refused within the cache's TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import event

from autoft_service.api import auth, create_app
from autoft_service.api.auth import AuthCache
from autoft_service.settings import Settings
from autoft_service.store import JobStore


@contextmanager
def counted_queries(store: JobStore) -> Iterator[list[str]]:
    """The SQL statements ``store`` runs inside the block."""
    seen: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(store.db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(store.db.engine, "before_cursor_execute", before)


def _key_lookups(statements: list[str]) -> list[str]:
    return [s for s in statements if "api_keys" in s]


def test_a_cached_key_costs_no_key_query(client: TestClient, store: JobStore) -> None:
    key, _ = store.create_api_key("acme", "t")
    headers = {"Authorization": f"Bearer {key}"}
    with counted_queries(store) as first:
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert len(_key_lookups(first)) == 1
    with counted_queries(store) as again:
        for _ in range(5):
            assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert _key_lookups(again) == []
    assert again  # the routes themselves still read the jobs


def test_a_wrong_key_is_never_served_from_the_cache(client: TestClient, store: JobStore) -> None:
    key, _ = store.create_api_key("acme", "t")
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")  # same prefix, wrong secret
    with counted_queries(store) as seen:
        for _ in range(3):
            r = client.get("/v1/jobs", headers={"X-API-Key": wrong})
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
    assert len(_key_lookups(seen)) == 3  # checked against the store every time, never cached


def test_revocation_is_honoured_within_the_ttl(tmp_path: Path, store: JobStore) -> None:
    settings = Settings(environment="test", data_dir=tmp_path, auth_cache_seconds=0.5)
    client = TestClient(create_app(settings=settings, store=store))
    key, record = store.create_api_key("acme", "t")
    headers = {"X-API-Key": key}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    JobStore(store.url).revoke_api_key(record.id)  # another process (autoft keys revoke)
    deadline = time.monotonic() + 0.5 + 0.5  # TTL plus a margin
    while client.get("/v1/jobs", headers=headers).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key was still accepted after the cache TTL"
        time.sleep(0.05)
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_ttl_zero_checks_the_store_on_every_request(tmp_path: Path, store: JobStore) -> None:
    settings = Settings(environment="test", data_dir=tmp_path, auth_cache_seconds=0)
    client = TestClient(create_app(settings=settings, store=store))
    key, _ = store.create_api_key("acme", "t")
    with counted_queries(store) as seen:
        for _ in range(3):
            assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
    assert len(_key_lookups(seen)) == 3


def test_cache_entries_expire_and_stay_bounded() -> None:
    now = [100.0]
    cache = AuthCache(2.0, clock=lambda: now[0])
    cache.put("d1", "acme")
    assert cache.get("d1") == "acme"
    now[0] += 2.0
    assert cache.get("d1") is None
    for i in range(auth.MAX_CACHED_KEYS + 5):
        cache.put(f"k{i}", "acme")
    assert len(cache._entries) <= auth.MAX_CACHED_KEYS


def test_auth_cache_seconds_is_validated() -> None:
    with pytest.raises(ValidationError, match="auth_cache_seconds"):
        Settings(auth_cache_seconds=-1)
