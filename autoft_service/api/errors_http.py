"""The one place that maps errors to HTTP: a table from error class to status, and the handlers.

Every non-2xx response has the same body: ``{"error": {"code", "message", "field", "details"}}``, whether the
error came from the domain (``AutoFTError``), from request validation, from malformed JSON, from an oversized
body or from routing (unknown path, wrong method).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from autoft_service.errors import (
    AutoFTError,
    BackendUnavailable,
    InvalidSpec,
    JobNotFound,
    JobStateConflict,
    TrialNotFound,
    Unauthorized,
)

log = logging.getLogger(__name__)


class MalformedJSON(AutoFTError):
    """The request body is not valid JSON."""

    code = "malformed_json"


class InvalidRequest(AutoFTError):
    """A query, path, header or body parameter failed validation."""

    code = "invalid_request"


class PayloadTooLarge(AutoFTError):
    code = "payload_too_large"


class RateLimited(AutoFTError):
    """An API key sent more requests than its rate limit; ``details.retry_after_s`` says when to retry."""

    code = "rate_limited"


class RouteNotFound(AutoFTError):
    code = "not_found"


class MethodNotAllowed(AutoFTError):
    code = "method_not_allowed"


#: Error class → HTTP status. An error takes the status of the nearest class of its MRO listed here, so a
#: new subclass of a known error (a new ``UnknownName`` …) inherits its parent's status; classes with no
#: listed ancestor are server errors (500).
STATUS_BY_CLASS: dict[type[AutoFTError], int] = {
    MalformedJSON: 400,
    Unauthorized: 401,
    RouteNotFound: 404,
    JobNotFound: 404,
    TrialNotFound: 404,
    MethodNotAllowed: 405,
    JobStateConflict: 409,
    PayloadTooLarge: 413,
    RateLimited: 429,
    InvalidRequest: 422,
    InvalidSpec: 422,  # and every UnknownName: loss terms, tasks, metrics, methods
    BackendUnavailable: 503,
}


def status_for(error: AutoFTError) -> int:
    """The HTTP status of ``error``: that of the nearest class in its MRO listed in ``STATUS_BY_CLASS``."""
    for cls in type(error).__mro__:
        status = STATUS_BY_CLASS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")
    field: str | None = Field(default=None, description="Dotted path of the input at fault, if any.")
    details: Any = Field(default=None, description="Extra structured information (e.g. every field error).")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def error_response(error: AutoFTError, status: int | None = None) -> JSONResponse:
    status = status or status_for(error)
    body = ErrorResponse(
        error=ErrorDetail(code=error.code, message=error.message, field=error.field, details=error.details)
    )
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="autoft"'
    if status == 429 and isinstance(error.details, dict) and "retry_after_s" in error.details:
        headers["Retry-After"] = str(error.details["retry_after_s"])
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers or None)


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "search", "loss_terms", 0)`` → ``search.loss_terms.0``; query/path/header → the name;
    the whole body (``("body",)``) → ``body``."""
    parts = list(loc)
    if parts == ["body"]:
        return "body"
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def validation_error(exc: RequestValidationError) -> AutoFTError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return MalformedJSON(f"request body is not valid JSON: {reason}", field="body")
    details = [
        {
            "field": _dotted(e.get("loc", ())),
            "message": e.get("msg", ""),
            "location": str((e.get("loc") or ("",))[0]),
        }
        for e in errors
    ]
    first_field = details[0]["field"] if details else None
    message = f"{first_field}: {details[0]['message']}" if details else "invalid request"
    return InvalidRequest(message, field=first_field or None, details=details)


async def _on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AutoFTError)
    status = status_for(exc)
    if status >= 500:
        log.warning("request failed: %s: %s", exc.code, exc.message)
    return error_response(exc, status)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc))


def _allowed_methods(request: Request) -> str | None:
    """The methods the OpenAPI document lists for the request's path (the router's Allow header can name
    only the first route that matched the path)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        if compile_path(template)[0].match(request.url.path):
            return ", ".join(sorted(m.upper() for m in operations))
    return None


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: AutoFTError
    if exc.status_code == 404:
        error = RouteNotFound("no such resource")
    elif exc.status_code == 405:
        error = MethodNotAllowed("method not allowed on this resource")
    else:
        error = AutoFTError(str(exc.detail))
        error.code = f"http_{exc.status_code}"
    response = error_response(error, exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        response.headers["Allow"] = allowed
    return response


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(AutoFTError("internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one error body."""
    app.add_exception_handler(AutoFTError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


#: OpenAPI ``responses`` for the error statuses every authenticated route may answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON body."},
    401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
    404: {"model": ErrorResponse, "description": "Not found (or owned by another tenant)."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    422: {"model": ErrorResponse, "description": "Invalid input; `field` names the input at fault."},
    429: {
        "model": ErrorResponse,
        "description": "Rate limit of the API key exceeded; retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": ErrorResponse, "description": "A backing service (the job store) is unavailable."},
}
CONFLICT_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Not allowed in the job's (or trial's) current state."}
}
