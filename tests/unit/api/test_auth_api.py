"""Authentication: keys required except on health, readiness, metrics and docs; development bypass."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from autoft_service.api import create_app
from autoft_service.settings import Settings
from autoft_service.store import JobStore


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/catalog"),
     ("POST", "/v1/jobs/x/cancel"), ("GET", "/v1/jobs/x/trials")],
)  # fmt: skip
def test_routes_need_a_key(client: TestClient, store: JobStore, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = client.request(method, path, headers={"Authorization": "Bearer aft_000000000000_" + "x" * 43})
    assert bad.status_code == 401
    assert store.list_jobs(None)[1] == 0


def test_both_header_forms_work(client: TestClient, store: JobStore) -> None:
    key, _ = store.create_api_key("acme", "t")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200


def test_revoked_key_is_refused(client: TestClient, store: JobStore) -> None:
    key, record = store.create_api_key("acme", "t")
    store.revoke_api_key(record.id)
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401


@pytest.mark.parametrize(
    "path", ["/healthz", "/v1/healthz", "/readyz", "/v1/readyz", "/metrics", "/openapi.json"]
)
def test_open_routes(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_auth_disabled_in_development_uses_default_tenant(tmp_path: Path, store: JobStore) -> None:
    settings = Settings(environment="development", auth_disabled=True, data_dir=tmp_path)
    client = TestClient(create_app(settings=settings, store=store))
    r = client.post("/v1/jobs", json={"name": "t1", "task": {"name": "digits-shift"}})
    assert r.status_code == 202
    assert store.get_job("default", r.json()["id"]).tenant == "default"


def test_auth_cannot_be_disabled_outside_development() -> None:
    with pytest.raises(ValueError, match="only allowed"):
        Settings(environment="production", auth_disabled=True)
