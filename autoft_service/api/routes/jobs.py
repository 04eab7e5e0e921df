"""Jobs: submit, list, inspect, cancel, extend."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from autoft_service.api.auth import Tenant
from autoft_service.api.deps import SettingsDep, StoreDep, app_settings, app_store
from autoft_service.api.errors_http import CONFLICT_RESPONSE, ERROR_RESPONSES, InvalidRequest, MalformedJSON
from autoft_service.api.schemas import (
    ExtendRequest,
    JobDetail,
    JobPage,
    JobState,
    job_detail_json,
    job_page_json,
)
from autoft_service.errors import InvalidSpec, UnknownTask
from autoft_service.spec import parse_spec
from autoft_service.store import JobRecord

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON (any content type); ``MalformedJSON`` when it is not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a job spec as a JSON object", field="body")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MalformedJSON(f"request body is not valid JSON: {e}", field="body") from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def refuse_import_paths(body: Any) -> None:
    """Over the API a task is a registered name: a ``module:attribute`` path would import server code."""
    task = body.get("task") if isinstance(body, dict) else None
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(name, str) and ":" in name:
        raise UnknownTask(
            f"task {name!r}: the API accepts registered task names only (see GET /v1/catalog)",
            field="task.name",
        )


_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A job spec (see the JobSpec schema and GET /v1/catalog for valid names).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
    }
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a submission safely: the same key returns the same job (200) instead of a new one.",
    ),
]


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    responses={
        200: {"model": JobDetail, "description": "Repeat of an Idempotency-Key."},
        **CONFLICT_RESPONSE,
    },
    openapi_extra=_SPEC_BODY,
)
async def submit_job(
    tenant: Tenant,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Submit a job spec; it is validated, queued and run when a runner is free."""
    body = await json_body(request)  # read here, not as a dependency: the body's schema is in _SPEC_BODY
    store, settings = app_store(request), app_settings(request)
    if not isinstance(body, dict):
        raise InvalidSpec(
            f"the request body must be a JSON object (a job spec), not {_json_type(body)}", field="body"
        )
    refuse_import_paths(body)
    # on the event loop: validation is pure Python (tens of microseconds), its only I/O a few stat calls
    # on the paths a spec names, which the data roots confine; a thread hop would cost more than the work
    spec = parse_spec(body, data_roots=settings.data_root_paths)
    job, created = await store.create_job_async(
        tenant, spec, idempotency_key, max_trials=settings.max_trials_per_job
    )
    code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
    return _detail(job, settings.mlflow_ui_url, code)


# The read routes are async and await the store's async reads (on the event loop on PostgreSQL, in the
# thread pool elsewhere): a sync route would also validate its response in the thread pool.
@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    tenant: Tenant,
    request: Request,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")] = 0,
) -> Response:
    """List this tenant's jobs, newest first."""
    items, total = await app_store(request).list_job_summaries_async(tenant, state=state, limit=limit, offset=offset)
    return Response(job_page_json(items, total, limit, offset), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobDetail)
async def get_job(job_id: str, tenant: Tenant, request: Request) -> Response:
    """A job's state, progress, best-so-far, results table and MLflow links."""
    job = await app_store(request).get_job_async(tenant, job_id)
    return _detail(job, app_settings(request).mlflow_ui_url)


def _detail(job: JobRecord, mlflow_ui_url: str | None, code: int = status.HTTP_200_OK) -> Response:
    """A job's ``JobDetail`` body, serialized without building the model (:func:`job_detail_json`)."""
    return Response(job_detail_json(job, mlflow_ui_url), status_code=code, media_type="application/json")


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    responses=CONFLICT_RESPONSE,
)
def cancel_job(job_id: str, tenant: Tenant, store: StoreDep, settings: SettingsDep) -> JobDetail:
    """Cancel a job: a queued job at once, a running one within seconds."""
    return JobDetail.from_record(store.request_cancel(tenant, job_id), settings.mlflow_ui_url)


@router.post(
    "/jobs/{job_id}/extend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    responses=CONFLICT_RESPONSE,
)
def extend_job(
    job_id: str, body: ExtendRequest, tenant: Tenant, store: StoreDep, settings: SettingsDep
) -> JobDetail:
    """Add trials to a job's search (up to the per-job ceiling); a succeeded job is queued again to run them."""
    job = store.extend_job(tenant, job_id, body.trials, max_trials=settings.max_trials_per_job)
    return JobDetail.from_record(job, settings.mlflow_ui_url)
