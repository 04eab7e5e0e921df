"""A job's HTML report, and short-lived signed links that open it in a browser without an API key."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials

from autoft_service.api import report_links
from autoft_service.api.auth import Tenant, api_key_scheme, bearer_scheme, get_tenant, rate_limit
from autoft_service.api.deps import SettingsDep, StoreDep
from autoft_service.api.errors_http import ERROR_RESPONSES
from autoft_service.api.schemas import ReportLink
from autoft_service.errors import JobNotFound, Unauthorized
from autoft_service.report import render_report

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

TokenQuery = Annotated[
    str | None,
    Query(
        max_length=128,
        description="A signed link token from POST /v1/jobs/{job_id}/report-link, instead of an API key.",
    ),
]


@router.get(
    "/jobs/{job_id}/report",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "A self-contained HTML page (plotly.js embedded once; no network needed to view it).",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
)
def get_report(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    token: TokenQuery = None,
) -> HTMLResponse:
    """A job's report as one HTML page: header, results table and optimization charts. Authenticate with
    an API key, or with the ``token`` of a signed report link."""
    if token is None:
        tenant = get_tenant(request, settings, store, bearer, api_key)
    else:
        tenant = _tenant_of_link(request, store, job_id, token)
    job = store.get_job(tenant, job_id)
    page = HTMLResponse(render_report(job, store.all_trials(tenant, job_id)))
    page.headers["Cache-Control"] = "private, no-store"
    page.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return page


def _tenant_of_link(request: Request, store: StoreDep, job_id: str, token: str) -> str:
    """The job's tenant when ``token`` is a valid link to it; an unknown job is refused like a forged
    token (a link must not tell which job ids exist)."""
    try:
        tenant = store.get_job(None, job_id).tenant
    except JobNotFound:
        raise Unauthorized("invalid report link token", field="token") from None
    report_links.verify(request.app.state.report_link_key, token, job_id, tenant)
    rate_limit(request, f"report-link:{job_id}")
    return tenant


@router.post("/jobs/{job_id}/report-link", response_model=ReportLink)
def create_report_link(
    job_id: str, request: Request, tenant: Tenant, store: StoreDep, settings: SettingsDep
) -> ReportLink:
    """A short-lived signed URL of the job's report, to open in a browser without an API key."""
    job = store.get_job(tenant, job_id)
    expires_at = int(time.time()) + settings.report_link_ttl_seconds
    token = report_links.sign(request.app.state.report_link_key, job.id, tenant, expires_at)
    url = request.url_for("get_report", job_id=job.id).include_query_params(token=token)
    return ReportLink(
        url=str(url),
        path=f"{request.app.url_path_for('get_report', job_id=job.id)}?token={token}",
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )
