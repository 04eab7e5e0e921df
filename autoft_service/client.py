"""A small typed HTTP client for the autoft REST API.

Errors come back as the same domain errors the server raised (``JobNotFound``, ``InvalidSpec`` with its
``field`` …), chosen by the error body's ``code``; an unreachable server is ``BackendUnavailable``.

    with AutoFTClient("http://127.0.0.1:8000", api_key="aft_...") as client:
        job = client.submit({"name": "t1", "task": {"name": "digits-shift"}})
        for job in client.iter_progress(job.id):
            print(job.progress.trials_done, job.progress.best_value)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from autoft_service.api.schemas import (
    Catalog,
    EventPage,
    JobDetail,
    JobPage,
    ReportLink,
    Trial,
    TrialPage,
)
from autoft_service.errors import AutoFTError, BackendUnavailable

M = TypeVar("M", bound=BaseModel)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class APIError(AutoFTError):
    """An error response whose code this client does not know."""


def _error_classes() -> dict[str, type[AutoFTError]]:
    import autoft_service.api.errors_http  # noqa: F401  (its HTTP-only error classes)

    found: dict[str, type[AutoFTError]] = {}
    stack: list[type[AutoFTError]] = [AutoFTError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def error_from_response(response: httpx.Response) -> AutoFTError:
    """The domain error an error response stands for."""
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        unknown = APIError(f"HTTP {response.status_code}: {response.text[:500]}")
        unknown.code = f"http_{response.status_code}"
        return unknown
    cls = _error_classes().get(code, APIError)
    error = cls(message, field=body.get("field"), details=body.get("details"))
    if cls is APIError:
        error.code = code
    return error


class AutoFTClient:
    """Client of one autoft server. ``http`` may be any ``httpx.Client`` (e.g. FastAPI's TestClient)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __enter__(self) -> AutoFTClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    # Transport ------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            response = self.http.request(method, f"/v1{path}", headers=headers, **kwargs)
        except httpx.TransportError as e:
            raise BackendUnavailable(f"cannot reach the autoft server at {self.base_url}: {e}") from e
        if response.is_error:
            raise error_from_response(response)
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as e:
            raise APIError(f"unexpected response from {method} {path}: {e}") from e

    # Jobs -----------------------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> JobDetail:
        """Submit a job spec (a dict, as in a YAML spec file); return the queued (or repeated) job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/jobs", JobDetail, json=spec, headers=headers)

    def get_job(self, job_id: str) -> JobDetail:
        return self._request("GET", f"/jobs/{job_id}", JobDetail)

    def list_jobs(self, state: str | None = None, limit: int = 20, offset: int = 0) -> JobPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._request("GET", "/jobs", JobPage, params=params)

    def cancel(self, job_id: str) -> JobDetail:
        return self._request("POST", f"/jobs/{job_id}/cancel", JobDetail)

    def extend(self, job_id: str, trials: int) -> JobDetail:
        return self._request("POST", f"/jobs/{job_id}/extend", JobDetail, json={"trials": trials})

    def report_link(self, job_id: str) -> ReportLink:
        """A short-lived signed URL of the job's HTML report, to open in a browser without the API key."""
        return self._request("POST", f"/jobs/{job_id}/report-link", ReportLink)

    # Trials and events ------------------------------------------------------------------------------------
    def list_trials(
        self, job_id: str, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> TrialPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._request("GET", f"/jobs/{job_id}/trials", TrialPage, params=params)

    def get_trial(self, job_id: str, number: int) -> Trial:
        return self._request("GET", f"/jobs/{job_id}/trials/{number}", Trial)

    def retry_trial(self, job_id: str, number: int) -> JobDetail:
        return self._request("POST", f"/jobs/{job_id}/trials/{number}/retry", JobDetail)

    def list_events(
        self, job_id: str, after_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> EventPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if after_id is not None:
            params["after_id"] = after_id
        return self._request("GET", f"/jobs/{job_id}/events", EventPage, params=params)

    def catalog(self) -> Catalog:
        return self._request("GET", "/catalog", Catalog)

    # Following a job ------------------------------------------------------------------------------------
    def iter_progress(self, job_id: str, interval: float = 1.0) -> Iterator[JobDetail]:
        """Yield the job each time its state or progress changes, ending with it in a finished state."""
        last: tuple[Any, ...] | None = None
        while True:
            job = self.get_job(job_id)
            p = job.progress
            key = (job.state, job.cancel_requested, p.trials_total, p.trials_done, p.best_value)
            if key != last:
                last = key
                yield job
            if job.state in FINISHED:
                return
            time.sleep(interval)

    def wait(self, job_id: str, timeout: float | None = None, interval: float = 1.0) -> JobDetail:
        """Poll until the job finishes; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.state in FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:g}s")
            time.sleep(interval)
