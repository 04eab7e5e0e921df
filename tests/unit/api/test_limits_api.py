"""Bounds on what one key can ask for: the per-job trial ceiling and per-key request rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autoft_service.api import create_app
from autoft_service.api.ratelimit import RateLimiter
from autoft_service.settings import Settings
from autoft_service.store import JobStore
from tests.suites.store_helpers import MINIMAL_SPEC

CEILING = 20


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path, max_trials_per_job=CEILING)


def submit(client: TestClient, headers: dict[str, str], trials: int) -> Any:
    return client.post("/v1/jobs", json={**MINIMAL_SPEC, "budget": {"trials": trials}}, headers=headers)


# Trial ceiling -----------------------------------------------------------------------------------------------
def test_submit_above_the_ceiling_is_refused_and_stores_nothing(
    client: TestClient, acme: dict[str, str], store: JobStore
) -> None:
    r = submit(client, acme, CEILING + 1)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "budget.trials" and str(CEILING) in err["message"]
    assert err["details"]["max_trials_per_job"] == CEILING
    assert store.list_jobs(None)[1] == 0
    assert submit(client, acme, CEILING).status_code == 202  # the ceiling itself is allowed


def test_extend_twice_cannot_pass_the_ceiling(
    client: TestClient, acme: dict[str, str], store: JobStore
) -> None:
    job = submit(client, acme, 6).json()
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 10}, headers=acme)
    assert r.status_code == 202 and r.json()["progress"]["trials_total"] == 16
    events_before = store.list_events(None, job["id"])[1]
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 10}, headers=acme)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "trials" and f"at most {CEILING} trials" in err["message"]
    assert err["details"] == {"max_trials_per_job": CEILING, "trials_total": 16, "requested_total": 26}
    stored = store.get_job(None, job["id"])
    assert (stored.trials_total, stored.extra_trials) == (16, 10)  # nothing changed when refused
    assert store.list_events(None, job["id"])[1] == events_before
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 4}, headers=acme)  # up to the ceiling
    assert r.status_code == 202 and r.json()["progress"]["trials_total"] == CEILING


def test_retry_counts_against_the_ceiling(client: TestClient, acme: dict[str, str], store: JobStore) -> None:
    job = submit(client, acme, CEILING).json()
    store.claim_next_job("r1", 30)
    store.upsert_trial(job["id"], 0, state="failed", params={"optim/lr": 9.0}, error="nan loss")
    r = client.post(f"/v1/jobs/{job['id']}/trials/0/retry", headers=acme)
    assert r.status_code == 422 and r.json()["error"]["field"] == "number"
    assert store.get_job(None, job["id"]).retry_requests == []


# Rate limits -------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def limited(tmp_path: Path, store: JobStore) -> Iterator[tuple[TestClient, Clock]]:
    settings = Settings(environment="test", data_dir=tmp_path, rate_limit_per_second=0.5, rate_limit_burst=3)
    app = create_app(settings=settings, store=store)
    clock = Clock()
    app.state.rate_limiter.clock = clock
    with TestClient(app) as c:
        yield c, clock


def test_a_burst_beyond_the_limit_gets_429_with_retry_after(
    limited: tuple[TestClient, Clock], acme: dict[str, str], globex: dict[str, str]
) -> None:
    client, clock = limited
    for _ in range(3):
        assert client.get("/v1/jobs", headers=acme).status_code == 200
    r = client.get("/v1/jobs", headers=acme)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "2"  # one token at 0.5/s
    err = r.json()["error"]
    assert err["code"] == "rate_limited" and err["details"]["retry_after_s"] == 2
    assert set(err) == {"code", "message", "field", "details"}
    assert client.post("/v1/jobs", json=MINIMAL_SPEC, headers=acme).status_code == 429  # every route
    assert client.get("/v1/jobs", headers=globex).status_code == 200  # another key is unaffected
    assert client.get("/healthz").status_code == 200  # probes are not limited
    clock.t += 2.0
    assert client.get("/v1/jobs", headers=acme).status_code == 200  # refilled


def test_a_bad_key_is_401_not_a_spent_token(limited: tuple[TestClient, Clock], acme: dict[str, str]) -> None:
    client, _ = limited
    for _ in range(5):
        assert client.get("/v1/jobs", headers={"X-API-Key": "aft_nope_nope"}).status_code == 401
    assert client.get("/v1/jobs", headers=acme).status_code == 200


def test_rate_zero_turns_limits_off() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.wait_s("k") == 0 for _ in range(1000))


def test_limits_are_documented_in_openapi(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["get"]["responses"]
    assert "Retry-After" in responses["429"]["headers"]
