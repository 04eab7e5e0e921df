"""Helpers shared by the store suite, the API and the report tests (plain functions and classes)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from autoft_service.spec import JobSpec, parse_spec
from autoft_service.store import JobStore

MINIMAL_SPEC: dict[str, Any] = {"name": "t1", "task": {"name": "digits-shift"}}


def spec(name: str = "t1", **overrides: Any) -> JobSpec:
    """A valid job spec; keyword arguments replace top-level keys."""
    return parse_spec({**MINIMAL_SPEC, "name": name, **overrides})


class FakeClock:
    """A UTC clock that only moves when told to (and by 1 ms per reading, so timestamps stay ordered)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(milliseconds=1)
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def migrated_sqlite_template(directory: Path) -> Path:
    """A migrated SQLite job store to copy for each test (migrating once is faster than per test)."""
    path = directory / "template.db"
    store = JobStore(f"sqlite:///{path}")
    store.init_db()
    store.close()  # the last connection checkpoints the WAL into the main file
    return path


def sqlite_copy(template: Path, directory: Path) -> str:
    """A fresh SQLite job store URL: a copy of the migrated template."""
    path = directory / "autoft.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"
