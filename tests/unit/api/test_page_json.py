"""The job list's JSON, built without models, is byte for byte what the ``JobPage`` model gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from autoft_service.api.schemas import JobPage, JobSummary, job_page_json
from autoft_service.store import JobStore, JobSummaryRecord
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
