"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI

import autoft_service
from autoft_service.api.auth import AuthCache
from autoft_service.api.docs import install_docs
from autoft_service.api.errors_http import install_error_handlers
from autoft_service.api.limits import BodySizeLimit
from autoft_service.api.metrics import AppMetrics, RequestMetrics
from autoft_service.api.openapi import install_openapi
from autoft_service.api.ratelimit import RateLimiter
from autoft_service.api.report_links import link_key
from autoft_service.api.routes import catalog, health, jobs, report, trials
from autoft_service.settings import Settings, get_settings
from autoft_service.store import JobStore

API_PREFIX = "/v1"
DESCRIPTION = (
    "Submit AutoFT jobs (a search over fine-tuning objectives on Ray Tune + Optuna, tracked in MLflow), "
    "follow their trials and read their results. Authenticate with an API key "
    "(`Authorization: Bearer <key>` or `X-API-Key: <key>`); a key sees only its tenant's jobs."
)


def create_app(
    settings: Settings | None = None,
    store: JobStore | None = None,
    readiness_checks: Mapping[str, Callable[[], object]] | None = None,
) -> FastAPI:
    """Build the API.

    ``settings`` default to :func:`get_settings`; routes read them from ``app.state`` (``SettingsDep``);
    ``store`` defaults to a :class:`JobStore` on ``settings.job_store_url`` whose schema is migrated here.
    ``readiness_checks`` (name → callable that raises when its backend is not usable) are added to the
    database check of ``GET /readyz``.
    """
    settings = settings or get_settings()
    if store is None:
        store = JobStore(settings.job_store_url)
        store.init_db()

    app = FastAPI(
        title="autoft-service",
        version=autoft_service.__version__,
        description=DESCRIPTION,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.readiness_checks = {"database": store.ping, **(readiness_checks or {})}
    app.state.metrics = AppMetrics(store)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.auth_cache = AuthCache(settings.auth_cache_seconds)
    app.state.report_link_key = link_key(settings)
    # No dependency_overrides here: while any is set, FastAPI rebuilds every dependency of every request
    # from its signature (about a fifth of an authenticated read). Routes read settings from app.state.

    install_error_handlers(app)
    for router in (jobs.router, report.router, trials.router, catalog.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # probes and scrapers also find them at /

    # Outermost first: count every request, then refuse oversized bodies before anything reads them.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)

    install_openapi(app)
    install_docs(app)
    return app
