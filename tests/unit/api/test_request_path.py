"""What keeps an authenticated request cheap: no dependency overrides on the app (while one is set, FastAPI
rebuilds every dependency from its signature on each request), settings read from the app, and the job
routes async (their store work alone goes to the thread pool)."""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from autoft_service.api import create_app
from autoft_service.api.routes import jobs
from autoft_service.settings import Settings
from autoft_service.store import JobStore


def test_the_app_sets_no_dependency_overrides(app: FastAPI) -> None:
    assert app.dependency_overrides == {}


def test_routes_use_the_settings_the_app_was_built_with(tmp_path: Path, store: JobStore) -> None:
    settings = Settings(environment="test", data_dir=tmp_path, max_trials_per_job=3)
    client = TestClient(create_app(settings=settings, store=store))
    key, _ = store.create_api_key("acme", "t")
    spec = {"name": "x", "task": {"name": "digits-shift"}, "budget": {"trials": 4}}
    r = client.post("/v1/jobs", json=spec, headers={"X-API-Key": key})
    assert r.status_code == 422 and r.json()["error"]["details"]["max_trials_per_job"] == 3


def test_job_routes_are_async() -> None:
    for route in (jobs.get_job, jobs.list_jobs, jobs.submit_job):
        assert inspect.iscoroutinefunction(route), route.__name__
