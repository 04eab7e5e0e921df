"""Jobs over HTTP: submission, idempotency, tenant isolation, pagination, cancel / extend / retry."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from autoft_service.settings import Settings
from autoft_service.store import JobStore
from tests.suites.store_helpers import MINIMAL_SPEC


def submit(client: TestClient, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json={**MINIMAL_SPEC, **extra}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_submit_queues_a_job_and_get_returns_it(client: TestClient, acme: dict[str, str]) -> None:
    job = submit(client, acme, budget={"trials": 7})
    assert job["state"] == "queued" and job["progress"]["trials_total"] == 7
    got = client.get(f"/v1/jobs/{job['id']}", headers=acme).json()
    assert got["id"] == job["id"] and got["spec"]["budget"]["trials"] == 7
    assert got["spec"]["search"]["loss_terms"][0] == "ce"  # defaults are filled in


def test_idempotency_key_repeat_returns_200_and_same_job(
    client: TestClient, acme: dict[str, str], store: JobStore
) -> None:
    headers = {**acme, "Idempotency-Key": "abc-123"}
    first = client.post("/v1/jobs", json=MINIMAL_SPEC, headers=headers)
    again = client.post("/v1/jobs", json=MINIMAL_SPEC, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={**MINIMAL_SPEC, "name": "different"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"
    assert store.list_jobs(None)[1] == 1


def test_tenants_see_only_their_jobs(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    job = submit(client, acme)
    submit(client, globex, name="theirs")
    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/trials"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
    ]:
        r = client.request(method, path, headers=globex)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", path
    listed = client.get("/v1/jobs", headers=globex).json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "theirs"
    assert client.get(f"/v1/jobs/{job['id']}", headers=acme).json()["state"] == "queued"  # untouched


def test_list_jobs_paginates_and_filters(client: TestClient, acme: dict[str, str]) -> None:
    ids = [submit(client, acme, name=f"j{i}")["id"] for i in range(5)]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=acme).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    assert [j["id"] for j in page["items"]] == ids[::-1][2:4]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=acme)
    cancelled = client.get("/v1/jobs", params={"state": "cancelled"}, headers=acme).json()
    assert cancelled["total"] == 1 and cancelled["items"][0]["id"] == ids[0]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"state": "nope"}, "state"),
    ],
)
def test_list_jobs_rejects_bad_query(
    client: TestClient, acme: dict[str, str], params: dict[str, Any], field: str
) -> None:
    r = client.get("/v1/jobs", params=params, headers=acme)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["field"] == field


def test_cancel_queued_job_then_conflict(client: TestClient, acme: dict[str, str]) -> None:
    job = submit(client, acme)
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=acme)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=acme)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_state_conflict"


def test_cancel_running_job_flags_it(client: TestClient, acme: dict[str, str], store: JobStore) -> None:
    job = submit(client, acme)
    store.claim_next_job("r1", 30)
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=acme)
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["cancel_requested"] is True
    assert store.cancel_requested(job["id"])


def test_extend(client: TestClient, acme: dict[str, str]) -> None:
    job = submit(client, acme, budget={"trials": 4})
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 3}, headers=acme)
    assert r.status_code == 202 and r.json()["progress"]["trials_total"] == 7
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 2}, headers=acme)
    assert r.status_code == 202 and r.json()["progress"]["trials_total"] == 9


@pytest.mark.parametrize(
    "body",
    [
        {"trials": 0},
        {"trials": 10_001},
        {"trials": "3"},
        {"trials": True},
        {"trials": 2.5},
        {"trials": 2.0},  # the job spec's integers refuse it too: one rule for both
        {},
        {"trials": 1, "x": 1},
        [],
        "3",
    ],
)
def test_extend_rejects_bad_bodies(
    client: TestClient, acme: dict[str, str], store: JobStore, body: Any
) -> None:
    job = submit(client, acme)
    r = client.post(f"/v1/jobs/{job['id']}/extend", json=body, headers=acme)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["field"] == (
        "body" if not isinstance(body, dict) else "x" if "x" in body else "trials"
    )
    assert store.get_job(None, job["id"]).extra_trials == 0


def test_extend_finished_failed_job_conflicts(
    client: TestClient, acme: dict[str, str], store: JobStore
) -> None:
    job = submit(client, acme)
    store.claim_next_job("r1", 30)
    store.mark_failed(job["id"], "boom")
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 2}, headers=acme)
    assert r.status_code == 409


def test_trials_events_and_retry(client: TestClient, acme: dict[str, str], store: JobStore) -> None:
    job = submit(client, acme)
    store.claim_next_job("r1", 30)
    store.upsert_trial(job["id"], 0, state="completed", params={"optim/lr": 0.1}, value=0.5)
    store.upsert_trial(job["id"], 1, state="failed", params={"optim/lr": 9.0}, error="nan loss")
    trials = client.get(f"/v1/jobs/{job['id']}/trials", headers=acme).json()
    assert trials["total"] == 2 and [t["state"] for t in trials["items"]] == ["completed", "failed"]
    assert client.get(f"/v1/jobs/{job['id']}/trials/1", headers=acme).json()["error"] == "nan loss"
    assert (
        client.get(f"/v1/jobs/{job['id']}/trials/5", headers=acme).json()["error"]["code"]
        == "trial_not_found"
    )
    assert client.post(f"/v1/jobs/{job['id']}/trials/0/retry", headers=acme).status_code == 409
    assert client.post(f"/v1/jobs/{job['id']}/trials/9/retry", headers=acme).status_code == 404
    r = client.post(f"/v1/jobs/{job['id']}/trials/1/retry", headers=acme)
    assert (
        r.status_code == 202 and r.json()["progress"]["trials_total"] == job["progress"]["trials_total"] + 1
    )
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=acme).json()
    assert [e["kind"] for e in events["items"]][0] == "created" and events["items"][-1]["kind"] == "retry"


def test_finished_job_shows_results_and_mlflow_links(
    settings: Settings, store: JobStore, acme: dict[str, str]
) -> None:
    from autoft_service.api import create_app

    app = create_app(
        settings=settings.model_copy(update={"mlflow_ui_url": "http://mlflow:5000/"}), store=store
    )
    client = TestClient(app)
    job = submit(client, acme)
    store.claim_next_job("r1", 30)
    store.set_handles(job["id"], experiment_id="3", parent_run_id="run9")
    store.mark_succeeded(
        job["id"], {"best_value": 0.9, "results": [{"method": "autoft", "id_test/accuracy": 0.8}]}
    )
    got = client.get(f"/v1/jobs/{job['id']}", headers=acme).json()
    assert got["state"] == "succeeded" and got["progress"]["best_value"] == 0.9
    assert got["results"]["results"][0]["method"] == "autoft"
    assert got["links"] == {
        "mlflow_experiment": "http://mlflow:5000/#/experiments/3",
        "mlflow_run": "http://mlflow:5000/#/experiments/3/runs/run9",
    }
