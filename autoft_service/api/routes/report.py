"""A job's HTML report."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from autoft_service.api.auth import Tenant
from autoft_service.api.deps import StoreDep
from autoft_service.api.errors_http import ERROR_RESPONSES
from autoft_service.report import render_report
from autoft_service.store import JobStore, TrialRecord

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

PAGE_SIZE = 100


def all_trials(store: JobStore, tenant: str, job_id: str) -> list[TrialRecord]:
    """Every trial of a job by number, read page by page."""
    trials: list[TrialRecord] = []
    while True:
        page, total = store.list_trials(tenant, job_id, limit=PAGE_SIZE, offset=len(trials))
        trials.extend(page)
        if not page or len(trials) >= total:
            return trials


@router.get(
    "/jobs/{job_id}/report",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "A self-contained HTML page (plotly.js embedded; no network needed to view it).",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
)
def get_report(job_id: str, tenant: Tenant, store: StoreDep) -> HTMLResponse:
    """A job's report as one HTML page: header, results table and optimization charts."""
    job = store.get_job(tenant, job_id)
    return HTMLResponse(render_report(job, all_trials(store, tenant, job_id)))
