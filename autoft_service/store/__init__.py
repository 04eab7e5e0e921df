"""The job store: ORM models, migrations, sessions and :class:`JobStore`."""

from __future__ import annotations

from autoft_service.store.db import current_revision, make_engine, upgrade
from autoft_service.store.job_store import JobStore
from autoft_service.store.models import FINISHED_JOB_STATES, FINISHED_TRIAL_STATES, JOB_STATES, TRIAL_STATES
from autoft_service.store.records import (
    ApiKeyRecord,
    EventRecord,
    Histogram,
    JobRecord,
    JobSummaryRecord,
    TrialRecord,
)
from autoft_service.store.transitions import TRANSITIONS, transition


def init_db(url: str) -> None:
    """Create or migrate the job store at ``url`` to the latest schema (idempotent)."""
    upgrade(url)


__all__ = [
    "FINISHED_JOB_STATES",
    "FINISHED_TRIAL_STATES",
    "JOB_STATES",
    "TRANSITIONS",
    "TRIAL_STATES",
    "ApiKeyRecord",
    "EventRecord",
    "Histogram",
    "JobRecord",
    "JobStore",
    "JobSummaryRecord",
    "TrialRecord",
    "current_revision",
    "init_db",
    "make_engine",
    "transition",
    "upgrade",
]
