"""FastAPI dependencies shared by the routes: settings and the job store of the app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from autoft_service.settings import Settings, get_settings
from autoft_service.store import JobStore


async def get_store(request: Request) -> JobStore:
    """The app's job store (set by ``create_app``); async, so FastAPI calls it without a thread hop."""
    store: JobStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
