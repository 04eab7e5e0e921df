"""Immutable snapshots of rows that the store hands out (no session, no lazy loading)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from autoft_service.store.models import FINISHED_JOB_STATES, ApiKey, Job, JobEvent, Trial


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant: str
    name: str
    spec: dict[str, Any]
    state: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None
    owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    cancel_requested: bool
    trials_total: int
    trials_done: int
    best_value: float | None
    best_params: dict[str, Any] | None
    results: dict[str, Any] | None
    error: str | None
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None
    optuna_study_name: str | None
    extra_trials: int
    retry_requests: list[Any]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES

    @classmethod
    def of(cls, row: Job) -> JobRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobSummaryRecord:
    """The columns of a job that a job list shows."""

    id: str
    name: str
    state: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    trials_total: int
    trials_done: int
    best_value: float | None
    best_params: dict[str, Any] | None


@dataclass(frozen=True)
class TrialRecord:
    job_id: str
    number: int
    tune_trial_id: str | None
    state: str
    params: dict[str, Any]
    value: float | None
    last_step: int | None
    started_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    error: str | None

    @classmethod
    def of(cls, row: Trial) -> TrialRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: str
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, row: JobEvent) -> EventRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key's metadata (never the key itself)."""

    id: str
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (one per upper bound, +Inf last), sum and count, as Prometheus wants."""

    buckets: list[tuple[float, int]]
    total: float
    count: int
