"""The typed HTTP client against the app (through FastAPI's TestClient, an httpx.Client)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from autoft_service.client import AutoFTClient
from autoft_service.errors import (
    BackendUnavailable,
    JobNotFound,
    JobStateConflict,
    Unauthorized,
    UnknownLossTerm,
)
from autoft_service.store import JobStore
from tests.suites.store_helpers import MINIMAL_SPEC


@pytest.fixture
def api(client: TestClient, store: JobStore) -> AutoFTClient:
    key, _ = store.create_api_key("acme", "client")
    return AutoFTClient("http://testserver", key, http=client)


def test_submit_get_list_cancel(api: AutoFTClient) -> None:
    job = api.submit(MINIMAL_SPEC, idempotency_key="once")
    assert api.submit(MINIMAL_SPEC, idempotency_key="once").id == job.id
    assert api.get_job(job.id).state == "queued"
    page = api.list_jobs(state="queued")
    assert page.total == 1 and page.items[0].id == job.id
    assert api.extend(job.id, 2).progress.trials_total == job.progress.trials_total + 2
    assert api.cancel(job.id).state == "cancelled"
    assert api.wait(job.id, timeout=1).state == "cancelled"
    assert [j.state for j in api.iter_progress(job.id)] == ["cancelled"]
    assert api.list_events(job.id).items[0].kind == "created"
    assert api.list_trials(job.id).total == 0
    assert "ce" in {t.name for t in api.catalog().loss_terms}


def test_errors_come_back_as_domain_errors(api: AutoFTClient, client: TestClient) -> None:
    with pytest.raises(JobNotFound):
        api.get_job("0" * 32)
    with pytest.raises(UnknownLossTerm) as e:
        api.submit({**MINIMAL_SPEC, "search": {"loss_terms": ["nope"]}})
    assert e.value.field == "search.loss_terms.0" and "nope" in e.value.message
    job = api.submit(MINIMAL_SPEC)
    api.cancel(job.id)
    with pytest.raises(JobStateConflict):
        api.cancel(job.id)
    with pytest.raises(Unauthorized):
        AutoFTClient("http://testserver", "aft_bad", http=client).list_jobs()


def test_wait_times_out(api: AutoFTClient) -> None:
    job = api.submit(MINIMAL_SPEC)
    with pytest.raises(TimeoutError):
        api.wait(job.id, timeout=0.05, interval=0.01)


def test_unreachable_server_is_backend_unavailable() -> None:
    with AutoFTClient("http://127.0.0.1:9", timeout=2) as api, pytest.raises(BackendUnavailable):
        api.get_job("x")
