"""What every part of the job store shares: the database, the clock and row look-ups scoped by tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autoft_service.errors import JobNotFound
from autoft_service.store.aio import AsyncReads
from autoft_service.store.db import PING_AFTER_IDLE_S, Database, upgrade_engine
from autoft_service.store.models import Job, JobEvent


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreBase:
    """Owns the engine and sessions. ``clock`` (UTC) is injectable so tests can expire leases instantly."""

    def __init__(
        self, url: str, *, clock: Callable[[], datetime] | None = None, **engine_kwargs: Any
    ) -> None:
        ping_after_idle_s = engine_kwargs.get("ping_after_idle_s", PING_AFTER_IDLE_S)
        self.db = Database(url, **engine_kwargs)
        self.url = url
        self.clock = clock or utcnow
        #: The API's hot reads on the event loop (PostgreSQL only; ``None`` elsewhere). No connection is
        #: opened until an async read runs.
        self.aio = (
            AsyncReads(url, ping_after_idle_s=ping_after_idle_s) if self.db.dialect == "postgresql" else None
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.engine.url.render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        return self.clock()

    def init_db(self) -> None:
        """Create or migrate the schema to the latest revision (idempotent)."""
        upgrade_engine(self.db.engine)

    def ping(self) -> None:
        """``SELECT 1``; raise ``BackendUnavailable`` when the database does not answer."""
        self.db.ping()

    def close(self) -> None:
        self.db.dispose()
        if self.aio is not None:
            self.aio.pool.discard()

    # Helpers for the parts ------------------------------------------------------------------------------
    def _job(self, s: Session, tenant: str | None, job_id: str, *, lock: bool = False) -> Job:
        """The job ``job_id`` of ``tenant`` (any tenant when ``None``); another tenant's job is not found."""
        q = select(Job).where(Job.id == job_id)
        if tenant is not None:
            q = q.where(Job.tenant == tenant)
        if lock:
            q = q.with_for_update()
        job = s.scalars(q).first()
        if job is None:
            raise JobNotFound(f"job {job_id!r} not found", field="job_id")
        return job

    def _event(
        self, s: Session, job_id: str, kind: str, message: str = "", data: dict[str, Any] | None = None
    ) -> None:
        s.add(JobEvent(job_id=job_id, at=self.now(), kind=kind, message=message, data=data))
