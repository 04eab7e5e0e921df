"""One domain error hierarchy. Domain code raises these; the API maps ``code`` to an HTTP status."""

from __future__ import annotations

from typing import Any


class AutoFTError(Exception):
    """Base of every error the service reports to a user.

    ``code`` is a stable machine-readable name; ``field`` names the input at fault (a dotted path into the
    job spec or request), when there is one.
    """

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidSpec(AutoFTError):
    """A job spec (or part of one) failed validation."""

    code = "invalid_spec"


class UnknownName(InvalidSpec):
    """A name that must be resolved through a registry is not registered."""

    code = "unknown_name"


class UnknownLossTerm(UnknownName):
    code = "unknown_loss_term"


class UnknownTask(UnknownName):
    code = "unknown_task"


class UnknownMetric(UnknownName):
    code = "unknown_metric"


class UnknownFTMethod(UnknownName):
    """A fine-tuning method name that is not registered."""

    code = "unknown_ft_method"


class DuplicateRegistration(AutoFTError):
    """Two implementations claimed the same registry name."""

    code = "duplicate_registration"


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
