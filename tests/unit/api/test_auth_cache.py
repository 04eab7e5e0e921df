"""The key → tenant cache: a hit costs no database query, only accepted keys are cached, and a revoked key
is refused within the cache's TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
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


def _slow_lookups(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``store.authenticate`` take 0.2 s (a burst arrives while it runs); return its calls."""
    calls: list[str] = []
    real = store.authenticate

    def slow(key: str) -> str:
        calls.append(key)
        time.sleep(0.2)
        return real(key)

    monkeypatch.setattr(store, "authenticate", slow)
    return calls


async def _burst(app: FastAPI, headers: list[dict[str, str]]) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        responses = await asyncio.gather(*(c.get("/v1/jobs", headers=h) for h in headers))
    return [r.status_code for r in responses]


def test_a_burst_with_an_uncached_key_shares_one_store_lookup(
    app: FastAPI, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = store.create_api_key("acme", "t")
    other, _ = store.create_api_key("globex", "t")
    calls = _slow_lookups(store, monkeypatch)
    headers = [{"Authorization": f"Bearer {key}"}] * 20 + [{"X-API-Key": other}] * 5
    assert asyncio.run(_burst(app, headers)) == [200] * 25
    assert sorted(calls) == sorted([key, other])  # one look-up per key, not one per request
    assert app.state.auth_cache.pending == {}


def test_a_burst_with_a_wrong_key_is_refused_by_one_lookup_and_not_cached(
    app: FastAPI, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = store.create_api_key("acme", "t")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    calls = _slow_lookups(store, monkeypatch)
    assert asyncio.run(_burst(app, [{"X-API-Key": wrong}] * 10)) == [401] * 10
    assert calls == [wrong]
    assert asyncio.run(_burst(app, [{"X-API-Key": wrong}])) == [401]
    assert calls == [wrong, wrong]  # a refusal is not remembered


def test_the_key_headers_are_read_as_the_openapi_schemes_describe(
    client: TestClient, store: JobStore
) -> None:
    key, _ = store.create_api_key("acme", "t")
    for headers in (
        {"Authorization": f"bearer {key}"},
        {"Authorization": f"Bearer   {key}  "},
        {"Authorization": "Basic Zm9vOmJhcg==", "X-API-Key": key},  # not a bearer token: the other header
        {"Authorization": "Bearer", "X-API-Key": key},
    ):
        assert client.get("/v1/jobs", headers=headers).status_code == 200, headers
    for headers in ({"Authorization": f"Basic {key}"}, {"Authorization": "Bearer "}, {"X-API-Key": ""}):
        r = client.get("/v1/jobs", headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), headers


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
