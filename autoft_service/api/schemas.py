"""Request and response bodies of the REST API (their docstrings and field descriptions become OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from autoft_service.store import EventRecord, JobRecord, JobSummaryRecord, TrialRecord

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TrialState = Literal["running", "completed", "pruned", "failed", "interrupted"]


class Progress(BaseModel):
    trials_total: int = Field(description="Search budget (spec trials plus extensions and retries).")
    trials_done: int = Field(description="Trials that ended (completed, pruned or failed).")
    best_value: float | None = Field(description="Best objective value so far.")
    best_params: dict[str, Any] | None = Field(description="Hyperparameters of the best trial so far.")


class Links(BaseModel):
    mlflow_experiment: str | None = None
    mlflow_run: str | None = None


class JobSummary(BaseModel):
    """A job as listed."""

    id: str
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    progress: Progress

    @classmethod
    def from_record(cls, job: JobRecord) -> JobSummary:
        return cls(**_summary_fields(job))

    @classmethod
    def from_summary(cls, job: JobSummaryRecord) -> JobSummary:
        """The listed job from the columns the store reads for a job list."""
        return cls(**_summary_fields(job))


def _summary_fields(job: JobRecord | JobSummaryRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "progress": Progress(
            trials_total=job.trials_total,
            trials_done=job.trials_done,
            best_value=job.best_value,
            best_params=job.best_params,
        ),
    }


class JobDetail(JobSummary):
    """A job with its spec, results table (when done), error and links to MLflow."""

    spec: dict[str, Any] = Field(description="The normalised job spec (defaults filled in).")
    results: dict[str, Any] | None = Field(description="Results table and best trial, once succeeded.")
    error: str | None = Field(description="Why the job failed.")
    attempts: int = Field(description="How many times a runner claimed the job (> 1 after a crash).")
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None
    links: Links

    @classmethod
    def from_record(cls, job: JobRecord, mlflow_ui_url: str | None = None) -> JobDetail:
        links = Links(**_links_json(job, mlflow_ui_url))
        return cls(
            **_summary_fields(job), spec=job.spec, results=job.results, error=job.error, attempts=job.attempts,
            mlflow_experiment_id=job.mlflow_experiment_id, mlflow_parent_run_id=job.mlflow_parent_run_id,
            links=links,
        )  # fmt: skip


def _links_json(job: JobRecord, mlflow_ui_url: str | None) -> dict[str, str | None]:
    """The job's ``Links``: its experiment and parent run in the MLflow UI, when both are known."""
    exp, run = job.mlflow_experiment_id, job.mlflow_parent_run_id
    if not (mlflow_ui_url and exp):
        return {"mlflow_experiment": None, "mlflow_run": None}
    base = f"{mlflow_ui_url.rstrip('/')}/#/experiments/{exp}"
    return {"mlflow_experiment": base, "mlflow_run": f"{base}/runs/{run}" if run else None}


def job_detail_json(job: JobRecord, mlflow_ui_url: str | None = None) -> bytes:
    """The JSON of ``JobDetail.from_record(job, mlflow_ui_url)``, built without the model (the same bytes;
    a test holds the two equal): the body of the API's hottest read and of every submission."""
    exp, run = job.mlflow_experiment_id, job.mlflow_parent_run_id
    links = _links_json(job, mlflow_ui_url)
    return pydantic_core.to_json(
        {
            **_summary_json(job), "spec": job.spec, "results": job.results, "error": job.error,
            "attempts": job.attempts, "mlflow_experiment_id": exp, "mlflow_parent_run_id": run, "links": links,
        }  # fmt: skip
    )


class Page(BaseModel):
    total: int = Field(description="Items matching the filter, over all pages.")
    limit: int
    offset: int


class JobPage(Page):
    items: list[JobSummary]


def job_page_json(items: list[JobSummaryRecord], total: int, limit: int, offset: int) -> bytes:
    """The JSON of ``JobPage`` for these records, built without a model per item (the same bytes in about
    a third of the time; a test holds the two equal)."""
    return pydantic_core.to_json(
        {"total": total, "limit": limit, "offset": offset, "items": [_summary_json(j) for j in items]}
    )


def _summary_json(job: JobSummaryRecord | JobRecord) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "state": job.state, "created_at": job.created_at,
        "updated_at": job.updated_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "progress": {"trials_total": job.trials_total, "trials_done": job.trials_done,
                     "best_value": job.best_value, "best_params": job.best_params},
    }  # fmt: skip


class Trial(BaseModel):
    """One search trial (Optuna trial number ``number``)."""

    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = Field(description="Latest objective value reported.")
    last_step: int | None
    started_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    error: str | None

    @classmethod
    def from_record(cls, t: TrialRecord) -> Trial:
        return cls(
            number=t.number, state=cast(TrialState, t.state), params=t.params, value=t.value, last_step=t.last_step,
            started_at=t.started_at, finished_at=t.finished_at, mlflow_run_id=t.mlflow_run_id, error=t.error,
        )  # fmt: skip


class TrialPage(Page):
    items: list[Trial]


class Event(BaseModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def from_record(cls, e: EventRecord) -> Event:
        return cls(id=e.id, at=e.at, kind=e.kind, message=e.message, data=e.data)


class EventPage(Page):
    items: list[Event]


class ExtendRequest(BaseModel):
    """Add trials to a job's search budget."""

    model_config = ConfigDict(extra="forbid")

    trials: StrictInt = Field(
        ge=1, le=10_000, description="Number of trials to add (a JSON integer, as in the job spec)."
    )


class ReportLink(BaseModel):
    """A signed link to a job's report: anyone holding it can read that report until it expires."""

    url: str = Field(
        description="Absolute URL of the report with its token (as this request reached the API)."
    )
    path: str = Field(description="The same link relative to the API's root.")
    expires_at: datetime = Field(description="When the link stops working.")


class LossTermInfo(BaseModel):
    name: str
    summary: str
    kind: str = Field(description="'logits' (depends on predictions) or 'weights' (parameters only).")


class TaskInfo(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any] = Field(description="JSON schema of the task's `params`.")


class MetricInfo(BaseModel):
    name: str
    doc: str


class SearchRangeInfo(BaseModel):
    low: float
    high: float
    log: bool = Field(description="Sampled log-uniformly.")
    integer: bool


class FTMethodInfo(BaseModel):
    """A fine-tuning method: a baseline of `final.baselines`, and a choice of `search.methods` when
    `searchable`."""

    name: str
    summary: str
    paper: str = Field(description="The method's citation.")
    searchable: bool = Field(description="May be listed in `search.methods` (searched as a training method).")
    requires_text_tower: bool = Field(description="Needs a dual-encoder (CLIP-like) model with a text tower.")
    params_schema: dict[str, Any] = Field(description="JSON schema of the method's `params`.")
    search_space: dict[str, SearchRangeInfo] = Field(
        description="Hyperparameters the search tunes when the method is searched, with their ranges."
    )


class Catalog(BaseModel):
    """What a job spec may name."""

    loss_terms: list[LossTermInfo]
    tasks: list[TaskInfo]
    metrics: list[MetricInfo]
    ft_methods: list[FTMethodInfo] = Field(
        description="Fine-tuning methods for `final.baselines` and `search.methods`."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(description="Each readiness check and its outcome.")
