"""The plug-in error hierarchy: what loss terms, tasks, methods, metrics and the registries raise.

It lives in ``workers/`` so the worker code never imports the service; :mod:`autoft_service.errors`
re-exports every class here and adds the service-only errors (jobs, trials, auth, backends). The API maps an
error to an HTTP status by its class (a subclass inherits its parent's status).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


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


def _dotted(prefix: str, loc: tuple[int | str, ...]) -> str:
    # pydantic names the validator of a wrapped or union type ``function-after[...]`` etc.: not a field
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(p for p in [prefix, *parts] if p)


def invalid_spec_from(e: ValidationError, prefix: str = "") -> InvalidSpec:
    """A pydantic ``ValidationError`` as one ``InvalidSpec``: the first error names the dotted field at fault
    (``<prefix>.<loc>``) and ``details`` lists every error as ``{"field", "message"}``."""
    errors = [
        {"field": _dotted(prefix, tuple(err["loc"])), "message": err["msg"]}
        for err in e.errors(include_url=False)
    ]
    if not errors:
        return InvalidSpec(f"{prefix}: invalid" if prefix else "invalid", field=prefix or None)
    first = errors[0]
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return InvalidSpec(message, field=first["field"], details=errors)
