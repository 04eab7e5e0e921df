"""One domain error hierarchy. Domain code raises these; the API maps each error's class to an HTTP status.

The plug-in errors (``AutoFTError``, ``InvalidSpec``, the ``Unknown*`` names, ``DuplicateRegistration``) and
the pydantic translator live in :mod:`workers.errors`, so ``workers/`` never imports the service; they are
re-exported here with the service-only errors below.
"""

from __future__ import annotations

from workers.errors import (
    AutoFTError,
    DuplicateRegistration,
    InvalidSpec,
    UnknownFTMethod,
    UnknownLossTerm,
    UnknownMetric,
    UnknownName,
    UnknownTask,
    invalid_spec_from,
)

__all__ = [
    "AutoFTError",
    "BackendUnavailable",
    "DuplicateRegistration",
    "InvalidSpec",
    "JobCancelled",
    "JobNotFound",
    "JobStateConflict",
    "SearchFailed",
    "TrialNotFound",
    "Unauthorized",
    "UnknownFTMethod",
    "UnknownLossTerm",
    "UnknownMetric",
    "UnknownName",
    "UnknownTask",
    "invalid_spec_from",
]


class JobNotFound(AutoFTError):
    code = "job_not_found"


class TrialNotFound(AutoFTError):
    code = "trial_not_found"


class JobStateConflict(AutoFTError):
    """An operation is not allowed in the job's (or trial's) current state."""

    code = "job_state_conflict"


class Unauthorized(AutoFTError):
    code = "unauthorized"


class BackendUnavailable(AutoFTError):
    """A backing service (database, Ray, MLflow) cannot be reached."""

    code = "backend_unavailable"


class SearchFailed(AutoFTError):
    """Every trial of a search failed, so there is no objective to retrain."""

    code = "search_failed"


class JobCancelled(AutoFTError):
    """The job was cancelled while it ran."""

    code = "job_cancelled"
