"""FastAPI dependencies shared by the routes: settings and the job store of the app.

The hottest routes (submit, list, get a job) take the ``Request`` and read both from the app with
:func:`app_store` / :func:`app_settings` instead: FastAPI resolves every dependency of every request, at a
cost comparable to the route's own work when the route is a single indexed read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from autoft_service.settings import Settings, get_settings
from autoft_service.store import JobStore


async def get_store(request: Request) -> JobStore:
    """The app's job store (set by ``create_app``); async, so FastAPI calls it without a thread hop."""
    return app_store(request)


async def get_app_settings(request: Request) -> Settings:
    """The app's settings (set by ``create_app``; :func:`get_settings` for an app built without them).

    Read from the app rather than through ``dependency_overrides``: while any override is set, FastAPI
    re-inspects every dependency's signature on every request."""
    return app_settings(request)


def app_settings(request: Request) -> Settings:
    """What :func:`get_app_settings` returns, for code that has the request."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


def app_store(request: Request) -> JobStore:
    """What :func:`get_store` returns, for code that has the request."""
    store: JobStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
