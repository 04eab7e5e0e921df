"""Jobs: submission (idempotent), look-up scoped by tenant, runner claims and leases, state changes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

from anyio.to_thread import run_sync
from psycopg.types.json import Jsonb
from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Select,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autoft_service.errors import InvalidSpec, JobNotFound, JobStateConflict
from autoft_service.spec import JobSpec
from autoft_service.store.aio import compile_pg
from autoft_service.store.base import StoreBase
from autoft_service.store.db import finite, json_dumps
from autoft_service.store.models import JOB_STATES, Job, JobEvent, Trial, UTCDateTime
from autoft_service.store.records import JobRecord, JobSummaryRecord
from autoft_service.store.transitions import transition

MAX_EXTRA_TRIALS = 10_000
#: The job columns of a :class:`JobRecord`, in its field order (reads that skip the ORM build it from these).
_RECORD_COLUMNS = [Job.__table__.c[f] for f in JobRecord.__dataclass_fields__]
_SUMMARY_COLUMNS = [Job.__table__.c[f] for f in JobSummaryRecord.__dataclass_fields__]
_RECORD_UTC = [i for i, c in enumerate(_RECORD_COLUMNS) if isinstance(c.type, UTCDateTime)]
_SUMMARY_UTC = [i for i, c in enumerate(_SUMMARY_COLUMNS) if isinstance(c.type, UTCDateTime)]
_INSERT_EVENT = insert(JobEvent)
_EVENT_COLUMNS = ["at", "kind", "message", "data"]
#: A job's JSON columns without a value are SQL NULL, as when the ORM left them out of its INSERT.
_SQL_NULL_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _job_param(c: ColumnElement[Any]) -> BindParameter[Any]:
    return bindparam(c.name, type_=_SQL_NULL_JSON if isinstance(c.type, JSON) else c.type)


_INSERT_JOB = insert(Job).values({c: _job_param(c) for c in _RECORD_COLUMNS})


@cache
def _insert_job_and_event() -> Any:
    """The job and its first event in one statement (PostgreSQL: a data-modifying CTE, atomic on its own,
    so a submission is one round trip instead of BEGIN, two INSERTs and COMMIT)."""
    jobs = Job.__table__.c
    new_job = (insert(Job).values({c: _job_param(c) for c in _RECORD_COLUMNS}).returning(jobs.id)).cte(
        "new_job"
    )
    events = JobEvent.__table__.c
    first_event = select(
        new_job.c.id, *(bindparam(f"event_{name}", type_=events[name].type) for name in _EVENT_COLUMNS)
    )
    return insert(JobEvent).from_select(["job_id", *_EVENT_COLUMNS], first_event)


# The API's hot reads run statements built once, with bound parameters: building a statement (and its
# cache key) costs about as much as executing it.
@cache
def _job_by_id(scoped: bool) -> Select[Any]:
    q = select(*_RECORD_COLUMNS).where(Job.id == bindparam("job_id"))
    return q.where(Job.tenant == bindparam("tenant")) if scoped else q


def _pg_json(value: Any, column: ColumnElement[Any]) -> Any:
    """``value`` of a job ``column`` as psycopg binds it: JSON through :func:`json_dumps` (``None`` is
    SQL NULL, as in :data:`_INSERT_JOB`), anything else as is."""
    if value is None or not isinstance(column.type, JSON):
        return value
    return Jsonb(value, dumps=json_dumps)


@cache
def _pg_sql(statement: Any) -> str:
    return compile_pg(statement)


def _filters(scoped: bool, by_state: bool) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if scoped:
        conds.append(Job.tenant == bindparam("tenant"))
    if by_state:
        conds.append(Job.state == bindparam("state"))
    return conds


@cache
def _job_count(scoped: bool, by_state: bool) -> Select[Any]:
    return select(func.count()).select_from(Job).where(*_filters(scoped, by_state))


@cache
def _job_page(scoped: bool, by_state: bool, summary: bool) -> Select[Any]:
    return (
        select(*(_SUMMARY_COLUMNS if summary else _RECORD_COLUMNS))
        .where(*_filters(scoped, by_state))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


def check_trial_ceiling(
    total: int, max_trials: int | None, *, field: str, current: int | None = None
) -> None:
    """``InvalidSpec`` on ``field`` when a job's total trials would exceed ``max_trials`` (``None``: no ceiling)."""
    if max_trials is None or total <= max_trials:
        return
    now = "" if current is None else f" (it has {current}, this asks for {total - current} more)"
    raise InvalidSpec(
        f"a job may have at most {max_trials} trials in total{now}; "
        f"the ceiling is the service setting AUTOFT_MAX_TRIALS_PER_JOB",
        field=field,
        details={"max_trials_per_job": max_trials, "trials_total": current, "requested_total": total},
    )


class JobOps(StoreBase):
    # Submission and look-up ------------------------------------------------------------------------------
    def create_job(
        self,
        tenant: str,
        spec: JobSpec,
        idempotency_key: str | None = None,
        *,
        max_trials: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; return ``(job, created)``.

        With an ``idempotency_key``, a repeat by the same tenant returns the existing job (``created`` is
        False); a repeat with a different spec is a ``JobStateConflict`` on field ``Idempotency-Key``.
        A spec whose ``budget.trials`` is above ``max_trials`` (the per-job ceiling) is ``InvalidSpec``.
        """
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
            raise InvalidSpec("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
        spec_json = spec.model_dump(mode="json")
        self._check_warm_start_sources(tenant, spec.search.warm_start_from)
        if idempotency_key is not None:
            existing = self._by_idempotency_key(tenant, idempotency_key, spec_json)
            if existing is not None:
                return existing, False
        record, event = self._new_job(tenant, spec, spec_json, idempotency_key, max_trials)
        values = {f: getattr(record, f) for f in JobRecord.__dataclass_fields__}
        try:
            # Core inserts of values known here: the ORM's unit of work cost more than the statements.
            if self.db.dialect == "postgresql":
                with self.db.reader() as conn:  # autocommit: the one statement is its own transaction
                    conn.execute(
                        _insert_job_and_event(), {**values, **{f"event_{k}": v for k, v in event.items()}}
                    )
            else:
                with self.db.transaction() as conn:
                    conn.execute(_INSERT_JOB, values)
                    conn.execute(_INSERT_EVENT, {"job_id": record.id, **event})
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer as its repeat.
            if idempotency_key is None:
                raise
            existing = self._by_idempotency_key(tenant, idempotency_key, spec_json)
            if existing is None:
                raise
            return existing, False
        return record, True

    def _new_job(
        self,
        tenant: str,
        spec: JobSpec,
        spec_json: dict[str, Any],
        idempotency_key: str | None,
        max_trials: int | None,
    ) -> tuple[JobRecord, dict[str, Any]]:
        """The record of a new queued job and its ``created`` event (``InvalidSpec`` above the ceiling)."""
        check_trial_ceiling(spec.budget.trials, max_trials, field="budget.trials")
        now = self.now()
        record = JobRecord(
            id=uuid.uuid4().hex, tenant=tenant, name=spec.name, spec=spec_json, state="queued",
            created_at=now, updated_at=now, started_at=None, finished_at=None,
            idempotency_key=idempotency_key, owner=None, lease_expires_at=None, attempts=0,
            cancel_requested=False, trials_total=spec.budget.trials, trials_done=0, best_value=None,
            best_params=None, results=None, error=None, mlflow_experiment_id=None, mlflow_parent_run_id=None,
            optuna_study_name=None, extra_trials=0, retry_requests=[],
        )  # fmt: skip
        return record, {"at": now, "kind": "created", "message": f"job {spec.name!r} queued", "data": None}

    async def create_job_async(
        self,
        tenant: str,
        spec: JobSpec,
        idempotency_key: str | None = None,
        *,
        max_trials: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """:meth:`create_job`, awaitable. On PostgreSQL a plain submission (no Idempotency-Key, no warm
        start: nothing to read first) is one statement on the event loop; the others, and every submission
        elsewhere, run :meth:`create_job` in the thread pool."""
        if self.aio is None or idempotency_key is not None or spec.search.warm_start_from:
            return await run_sync(
                lambda: self.create_job(tenant, spec, idempotency_key, max_trials=max_trials)
            )
        record, event = self._new_job(tenant, spec, spec.model_dump(mode="json"), None, max_trials)
        params = {c.name: _pg_json(getattr(record, c.name), c) for c in _RECORD_COLUMNS}
        params.update({f"event_{k}": v for k, v in event.items()})
        params["event_data"] = Jsonb(event["data"], dumps=json_dumps)  # JSON null, as the sync insert
        await self.aio.fetch([(_pg_sql(_insert_job_and_event()), params, ())], rows=False)
        return record, True

    def _check_warm_start_sources(self, tenant: str, job_ids: list[str]) -> None:
        """A job may only warm-start from its own tenant's jobs (their trials would leak otherwise)."""
        if not job_ids:
            return
        with self.db.session() as s:
            own = set(s.scalars(select(Job.id).where(Job.tenant == tenant, Job.id.in_(job_ids))))
        for i, job_id in enumerate(job_ids):
            if job_id not in own:
                raise InvalidSpec(f"job {job_id!r} not found", field=f"search.warm_start_from.{i}")

    def _by_idempotency_key(self, tenant: str, key: str, spec_json: dict[str, Any]) -> JobRecord | None:
        with self.db.session() as s:
            row = s.scalars(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)).first()
            if row is None:
                return None
            if row.spec != spec_json:
                raise JobStateConflict(
                    f"Idempotency-Key {key!r} was already used for job {row.id} with a different spec",
                    field="Idempotency-Key",
                    details={"job_id": row.id},
                )
            return JobRecord.of(row)

    def get_job(self, tenant: str | None, job_id: str) -> JobRecord:
        """The job ``job_id``; ``tenant=None`` means any tenant (runners), otherwise another tenant's job
        raises ``JobNotFound``."""
        with self.db.reader() as conn:  # columns, not ORM objects: the API's hottest read
            row = conn.execute(_job_by_id(tenant is not None), {"job_id": job_id, "tenant": tenant}).first()
        if row is None:
            raise JobNotFound(f"job {job_id!r} not found", field="job_id")
        return JobRecord(*row)

    def list_jobs(
        self, tenant: str | None, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """One page of jobs, newest first, and the total count matching the filter."""
        rows, total = self._page(tenant, state, limit, offset, summary=False)
        return [JobRecord(*r) for r in rows], total

    def list_job_summaries(
        self, tenant: str | None, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[JobSummaryRecord], int]:
        """:meth:`list_jobs` without the columns a job list does not show (spec, results, ...)."""
        rows, total = self._page(tenant, state, limit, offset, summary=True)
        return [JobSummaryRecord(*r) for r in rows], total

    def _page(
        self, tenant: str | None, state: str | None, limit: int, offset: int, *, summary: bool
    ) -> tuple[list[Any], int]:
        if state is not None and state not in JOB_STATES:
            raise InvalidSpec(f"unknown state {state!r}; valid: {', '.join(JOB_STATES)}", field="state")
        scoped, by_state = tenant is not None, state is not None
        params = {"tenant": tenant, "state": state, "limit": limit, "offset": offset}
        with self.db.reader() as conn:
            total = conn.scalar(_job_count(scoped, by_state), params) or 0
            rows = conn.execute(_job_page(scoped, by_state, summary), params).all()
        return list(rows), total

    # The same reads for async callers (the API): on the event loop on PostgreSQL, else in the thread pool.
    async def get_job_async(self, tenant: str | None, job_id: str) -> JobRecord:
        """:meth:`get_job`, awaitable."""
        if self.aio is None:
            return await run_sync(self.get_job, tenant, job_id)
        sql = _pg_sql(_job_by_id(tenant is not None))
        [rows] = await self.aio.fetch([(sql, {"job_id": job_id, "tenant": tenant}, _RECORD_UTC)])
        if not rows:
            raise JobNotFound(f"job {job_id!r} not found", field="job_id")
        return JobRecord(*rows[0])

    async def list_job_summaries_async(
        self, tenant: str | None, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[JobSummaryRecord], int]:
        """:meth:`list_job_summaries`, awaitable."""
        if self.aio is None:
            return await run_sync(lambda: self.list_job_summaries(tenant, state, limit, offset))
        if state is not None and state not in JOB_STATES:
            raise InvalidSpec(f"unknown state {state!r}; valid: {', '.join(JOB_STATES)}", field="state")
        scoped, by_state = tenant is not None, state is not None
        params: dict[str, Any] = {"tenant": tenant, "state": state, "limit": limit, "offset": offset}
        [[(total,)], rows] = await self.aio.fetch(
            [
                (_pg_sql(_job_count(scoped, by_state)), params, ()),
                (_pg_sql(_job_page(scoped, by_state, True)), params, _SUMMARY_UTC),
            ]
        )
        return [JobSummaryRecord(*r) for r in rows], int(total)

    # Claims and leases ------------------------------------------------------------------------------------
    def _claimable(self) -> ColumnElement[bool]:
        """Queued jobs, and running jobs nobody holds (released, or the owner's lease expired)."""
        return or_(
            Job.state == "queued",
            and_(
                Job.state == "running",
                or_(Job.owner.is_(None), Job.lease_expires_at.is_(None), Job.lease_expires_at < self.now()),
            ),
        )

    def claim_next_job(self, runner_id: str, lease_s: float) -> JobRecord | None:
        """Take the oldest claimable job for ``runner_id`` with a lease of ``lease_s`` seconds, or ``None``.

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent runners take different rows.
        Other backends: a conditional ``UPDATE ... WHERE <still claimable>`` whose row count decides the
        winner (SQLite also serialises writers with ``BEGIN IMMEDIATE``).
        """
        with self.db.session(write=True) as s:
            q = select(Job).where(self._claimable()).order_by(Job.created_at, Job.id)
            if self.db.dialect == "postgresql":
                row = s.scalars(q.limit(1).with_for_update(skip_locked=True)).first()
                return None if row is None else self._take(s, row, runner_id, lease_s)
            for row in s.scalars(q.limit(8)).all():
                claimed = self._take(s, row, runner_id, lease_s, conditional=True)
                if claimed is not None:
                    return claimed
            return None

    def _take(
        self, s: Session, row: Job, runner_id: str, lease_s: float, *, conditional: bool = False
    ) -> JobRecord | None:
        now = self.now()
        new_state = transition("start", row.state, job_id=row.id)
        previous_owner = row.owner
        values: dict[str, Any] = {
            "state": new_state,
            "owner": runner_id,
            "lease_expires_at": now + timedelta(seconds=lease_s),
            "attempts": row.attempts + 1,
            "started_at": row.started_at or now,
            "updated_at": now,
        }
        if conditional:
            res = s.execute(
                update(Job)
                .where(Job.id == row.id, self._claimable(), Job.attempts == row.attempts)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            s.refresh(row)
        else:
            for k, v in values.items():
                setattr(row, k, v)
        recovered = row.attempts > 1
        self._event(
            s, row.id, "claimed", f"claimed by {runner_id}" + (" (recovered)" if recovered else ""),
            {"runner": runner_id, "attempt": row.attempts, "previous_owner": previous_owner},
        )  # fmt: skip
        s.flush()
        return JobRecord.of(row)

    def heartbeat(self, job_id: str, runner_id: str, lease_s: float) -> bool:
        """Extend the lease; ``False`` when ``runner_id`` no longer owns the running job."""
        with self.db.session(write=True) as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.owner == runner_id, Job.state == "running")
                .values(lease_expires_at=self.now() + timedelta(seconds=lease_s))
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def release(self, job_id: str, runner_id: str) -> bool:
        """Give up the lease (a no-op, ``False``, when ``runner_id`` does not hold it)."""
        with self.db.session(write=True) as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.owner == runner_id)
                .values(owner=None, lease_expires_at=None, updated_at=self.now())
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def cancel_requested(self, job_id: str) -> bool:
        with self.db.session() as s:
            return bool(self._job(s, None, job_id).cancel_requested)

    # State changes ------------------------------------------------------------------------------------
    def _change(
        self,
        job_id: str,
        action: str,
        *,
        tenant: str | None = None,
        runner_id: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
        apply: Callable[[Job], None] | None = None,
        **values: Any,
    ) -> JobRecord:
        """Apply ``action`` through the transition table, set ``values`` and call ``apply(row)``, all in
        one transaction with the row locked."""
        with self.db.session(write=True) as s:
            row = self._job(s, tenant, job_id, lock=True)
            if runner_id is not None and row.owner != runner_id:
                raise JobStateConflict(
                    f"job {job_id} is not owned by {runner_id} (owner: {row.owner})", field="owner"
                )
            old = row.state
            new = transition(action, old, job_id=job_id)
            now = self.now()
            row.state = new
            row.updated_at = now
            for k, v in values.items():
                setattr(row, k, v)
            if apply is not None:
                apply(row)
            if new != old:
                if new in ("succeeded", "failed", "cancelled"):
                    row.finished_at = now
                    row.owner, row.lease_expires_at = None, None
                    # a finished job has no running trial: any the engine did not close ends here
                    self._interrupt_running_trials(s, job_id, error="the job ended while the trial ran")
                elif new == "queued":  # back in the queue: a fresh run of the same job
                    row.finished_at, row.error = None, None
                    row.cancel_requested = False
                    row.owner, row.lease_expires_at = None, None
                self._event(s, job_id, f"state:{new}", message or f"{old} -> {new}", data)
            elif message:
                self._event(s, job_id, action, message, data)
            s.flush()
            s.refresh(row)  # what was stored (JSON normalised), not what was assigned
            return JobRecord.of(row)

    def _interrupt_running_trials(self, s: Session, job_id: str, *, error: str | None = None) -> int:
        """Mark the job's ``running`` trials ``interrupted`` (with ``error``, if given), record an event;
        return how many."""
        values: dict[str, Any] = {"state": "interrupted", "finished_at": self.now()}
        if error is not None:
            values["error"] = error
        res = s.execute(
            update(Trial)
            .where(Trial.job_id == job_id, Trial.state == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        n = int(res.rowcount or 0)  # type: ignore[attr-defined]
        if n:
            self._event(s, job_id, "trials_interrupted", f"{n} trial(s) interrupted", {"count": n})
        return n

    def mark_running(self, job_id: str, runner_id: str | None = None) -> JobRecord:
        """The runner starts (or resumes) the job; idempotent for a running job."""
        return self._change(job_id, "start", runner_id=runner_id)

    def mark_succeeded(self, job_id: str, results: dict[str, Any], runner_id: str | None = None) -> JobRecord:
        """The job finished; ``results`` holds the results table (and best value / params, if given)."""
        extra: dict[str, Any] = {}
        if (
            isinstance(results.get("best_value"), (int, float))
            and finite(float(results["best_value"])) is not None
        ):
            extra["best_value"] = float(results["best_value"])
        if isinstance(results.get("best_params"), dict):
            extra["best_params"] = results["best_params"]
        return self._change(job_id, "succeed", runner_id=runner_id, results=results, **extra)

    def mark_failed(self, job_id: str, error: str, runner_id: str | None = None) -> JobRecord:
        return self._change(job_id, "fail", runner_id=runner_id, error=error, message=error[:500])

    def mark_cancelled(self, job_id: str, runner_id: str | None = None) -> JobRecord:
        return self._change(job_id, "cancel", runner_id=runner_id)

    def request_cancel(self, tenant: str | None, job_id: str) -> JobRecord:
        """Cancel a job: a queued one at once; a running one is flagged and its runner stops it."""
        return self._change(
            job_id, "request_cancel", tenant=tenant, cancel_requested=True, message="cancel requested"
        )

    def extend_job(
        self, tenant: str | None, job_id: str, extra_trials: int, *, max_trials: int | None = None
    ) -> JobRecord:
        """Add ``extra_trials`` to the search budget; a succeeded job is queued to run them.

        A new total above ``max_trials`` (the per-job ceiling) is ``InvalidSpec`` and changes nothing."""
        if not 1 <= extra_trials <= MAX_EXTRA_TRIALS:
            raise InvalidSpec(f"trials must be between 1 and {MAX_EXTRA_TRIALS}", field="trials")

        def add(row: Job) -> None:
            check_trial_ceiling(
                row.trials_total + extra_trials, max_trials, field="trials", current=row.trials_total
            )
            row.extra_trials += extra_trials
            row.trials_total += extra_trials

        return self._change(
            job_id, "extend", tenant=tenant, apply=add,
            message=f"extended by {extra_trials} trials", data={"trials": extra_trials},
        )  # fmt: skip

    def update_progress(
        self,
        job_id: str,
        *,
        trials_total: int | None = None,
        trials_done: int | None = None,
        best_value: float | None = None,
        best_params: dict[str, Any] | None = None,
    ) -> None:
        """Set the progress fields that are given (``None`` leaves a field as it is)."""
        values = {
            k: v
            for k, v in {
                "trials_total": trials_total,
                "trials_done": trials_done,
                "best_value": None if best_value is None else finite(float(best_value)),
                "best_params": best_params,
            }.items()
            if v is not None
        }
        if not values:
            return
        with self.db.session(write=True) as s:
            row = self._job(s, None, job_id, lock=True)
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = self.now()

    def set_handles(
        self,
        job_id: str,
        *,
        experiment_id: str | None = None,
        parent_run_id: str | None = None,
        study_name: str | None = None,
    ) -> None:
        """Remember the job's MLflow experiment / parent run and Optuna study, for links and resume."""
        with self.db.session(write=True) as s:
            row = self._job(s, None, job_id, lock=True)
            row.mlflow_experiment_id = experiment_id or row.mlflow_experiment_id
            row.mlflow_parent_run_id = parent_run_id or row.mlflow_parent_run_id
            row.optuna_study_name = study_name or row.optuna_study_name
            row.updated_at = self.now()
