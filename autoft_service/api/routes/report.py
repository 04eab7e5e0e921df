"""A job's HTML report."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from autoft_service.api.auth import Tenant
from autoft_service.api.deps import StoreDep
from autoft_service.api.errors_http import ERROR_RESPONSES
from autoft_service.report import render_report

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)


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
    return HTMLResponse(render_report(job, store.all_trials(tenant, job_id)))
