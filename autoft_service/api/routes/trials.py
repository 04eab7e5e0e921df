"""Trials and events of a job, and trial retries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from autoft_service.api.auth import Tenant
from autoft_service.api.deps import SettingsDep, StoreDep
from autoft_service.api.errors_http import CONFLICT_RESPONSE, ERROR_RESPONSES
from autoft_service.api.schemas import Event, EventPage, JobDetail, Trial, TrialPage, TrialState

router = APIRouter(tags=["trials"], responses=ERROR_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]
TrialNumber = Annotated[int, Path(ge=0, le=2**31 - 1, description="Optuna trial number.")]


@router.get("/jobs/{job_id}/trials", response_model=TrialPage)
def list_trials(
    job_id: str,
    tenant: Tenant,
    store: StoreDep,
    state: Annotated[TrialState | None, Query(description="Only trials in this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> TrialPage:
    """A job's trials by number."""
    items, total = store.list_trials(tenant, job_id, state=state, limit=limit, offset=offset)
    return TrialPage(items=[Trial.from_record(t) for t in items], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}/trials/{number}", response_model=Trial)
def get_trial(job_id: str, number: TrialNumber, tenant: Tenant, store: StoreDep) -> Trial:
    """One trial of a job."""
    return Trial.from_record(store.get_trial(tenant, job_id, number))


@router.post(
    "/jobs/{job_id}/trials/{number}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    responses=CONFLICT_RESPONSE,
)
def retry_trial(
    job_id: str, number: TrialNumber, tenant: Tenant, store: StoreDep, settings: SettingsDep
) -> JobDetail:
    """Run a failed or pruned trial again with the same parameters."""
    job = store.retry_trial(tenant, job_id, number, max_trials=settings.max_trials_per_job)
    return JobDetail.from_record(job, settings.mlflow_ui_url)


@router.get("/jobs/{job_id}/events", response_model=EventPage)
def list_events(
    job_id: str,
    tenant: Tenant,
    store: StoreDep,
    after_id: Annotated[int | None, Query(ge=0, description="Only events newer than this id.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> EventPage:
    """A job's event log, oldest first."""
    items, total = store.list_events(tenant, job_id, after_id=after_id, limit=limit, offset=offset)
    return EventPage(items=[Event.from_record(e) for e in items], total=total, limit=limit, offset=offset)
