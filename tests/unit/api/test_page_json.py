"""The job list's and a job's JSON, built without models, are byte for byte what the ``JobPage`` and
``JobDetail`` models give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from autoft_service.api.schemas import JobDetail, JobPage, JobSummary, job_detail_json, job_page_json
from autoft_service.store import JobRecord, JobStore, JobSummaryRecord
from tests.suites.store_helpers import spec


def _record(i: int) -> JobSummaryRecord:
    at = datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC) + timedelta(seconds=i)
    return JobSummaryRecord(
        id=f"{i:032x}", name=f"job \"{i}\" ü", state=("queued", "running", "succeeded")[i % 3],
        created_at=at, updated_at=at + timedelta(minutes=1), started_at=at if i % 2 else None,
        finished_at=None if i % 3 != 2 else at + timedelta(hours=1), cancel_requested=i == 4,
        trials_total=24 + i, trials_done=i, best_value=None if i % 2 == 0 else 0.1 * i + 1e-12,
        best_params=None if i % 2 == 0 else {"loss/ce/weight": 1.0, "optim/lr": 3e-5 * i, "nested": [i, None]},
    )  # fmt: skip


def test_page_json_matches_the_model() -> None:
    items = [_record(i) for i in range(7)]
    model = JobPage(items=[JobSummary.from_summary(j) for j in items], total=31, limit=7, offset=14)
    assert job_page_json(items, 31, 7, 14) == TypeAdapter(JobPage).dump_json(model)
    assert job_page_json([], 0, 20, 0) == TypeAdapter(JobPage).dump_json(
        JobPage(items=[], total=0, limit=20, offset=0)
    )


def test_the_list_route_answers_the_model_json(
    client: TestClient, store: JobStore, acme: dict[str, str]
) -> None:
    for i in range(3):
        store.create_job("acme", spec(f"j{i}"))
    r = client.get("/v1/jobs", params={"limit": 2, "offset": 1}, headers=acme)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    items, total = store.list_job_summaries("acme", limit=2, offset=1)
    expected = JobPage(items=[JobSummary.from_summary(j) for j in items], total=total, limit=2, offset=1)
    assert r.content == TypeAdapter(JobPage).dump_json(expected)
    assert JobPage.model_validate_json(r.content).total == 3


def _job(i: int) -> JobRecord:
    j = _record(i)
    return JobRecord(
        id=j.id, tenant="acme", name=j.name, spec={"name": j.name, "budget": {"trials": 3, "lr": [1e-5, None]}},
        state=j.state, created_at=j.created_at, updated_at=j.updated_at, started_at=j.started_at,
        finished_at=j.finished_at, idempotency_key=None, owner=None, lease_expires_at=None, attempts=i,
        cancel_requested=j.cancel_requested, trials_total=j.trials_total, trials_done=j.trials_done,
        best_value=j.best_value, best_params=j.best_params,
        results={"results": [{"method": "autoft", "ood_test/accuracy": 0.8125}]} if i % 3 == 2 else None,
        error="boom: \"quoted\"" if i == 4 else None, mlflow_experiment_id=str(i) if i % 2 else None,
        mlflow_parent_run_id=f"run{i}" if i % 4 == 1 else None, optuna_study_name=None, extra_trials=0,
        retry_requests=[],
    )  # fmt: skip


def test_detail_json_matches_the_model() -> None:
    for i in range(8):
        job = _job(i)
        for ui in (None, "http://mlflow.example/", "http://mlflow.example"):
            assert job_detail_json(job, ui) == JobDetail.from_record(job, ui).model_dump_json().encode()


def test_the_job_routes_answer_the_model_json(
    client: TestClient, store: JobStore, acme: dict[str, str]
) -> None:
    r = client.post("/v1/jobs", json={"name": "d1", "task": {"name": "digits-shift"}}, headers=acme)
    assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    job = store.get_job("acme", r.json()["id"])
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert r.content == JobDetail.from_record(job, settings.mlflow_ui_url).model_dump_json().encode()
    got = client.get(f"/v1/jobs/{job.id}", headers=acme)
    assert got.status_code == 200 and got.content == r.content
    again = client.post(
        "/v1/jobs", json={"name": "d2", "task": {"name": "digits-shift"}}, headers={**acme, "Idempotency-Key": "k1"}
    )
    repeat = client.post(
        "/v1/jobs", json={"name": "d2", "task": {"name": "digits-shift"}}, headers={**acme, "Idempotency-Key": "k1"}
    )
    assert (again.status_code, repeat.status_code) == (202, 200) and again.content == repeat.content
