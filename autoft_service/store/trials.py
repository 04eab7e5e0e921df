"""Trials, trial retries and the job event log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from autoft_service.errors import InvalidSpec, JobStateConflict, TrialNotFound
from autoft_service.store.db import finite
from autoft_service.store.jobs import JobOps, check_trial_ceiling
from autoft_service.store.models import FINISHED_TRIAL_STATES, TRIAL_STATES, Job, JobEvent, Trial
from autoft_service.store.records import EventRecord, JobRecord, TrialRecord
from autoft_service.store.transitions import trial_transition

TRIAL_FIELDS = frozenset(
    {
        "tune_trial_id",
        "state",
        "params",
        "value",
        "last_step",
        "started_at",
        "finished_at",
        "mlflow_run_id",
        "error",
    }
)
RETRYABLE_TRIAL_STATES = frozenset({"failed", "pruned"})


def _as_datetime(v: datetime | float | int) -> datetime:
    """Accept epoch seconds (what the engine reports) or an aware datetime."""
    return v if isinstance(v, datetime) else datetime.fromtimestamp(float(v), UTC)


class TrialOps(JobOps):
    # Trials -------------------------------------------------------------------------------------------
    def upsert_trial(self, job_id: str, number: int, **fields: Any) -> TrialRecord:
        """Create or update trial ``number`` of a job. A field passed as ``None`` is left unchanged.

        ``started_at`` / ``finished_at`` may be epoch seconds. Finishing a trial updates the job's
        ``trials_done``. Completed and pruned trials are final (``JobStateConflict``).
        """
        unknown = set(fields) - TRIAL_FIELDS
        if unknown:
            raise TypeError(f"unknown trial fields: {sorted(unknown)}")
        values = {k: v for k, v in fields.items() if v is not None}
        if "value" in values:
            values["value"] = finite(float(values["value"]))
        for k in ("started_at", "finished_at"):
            if k in values:
                values[k] = _as_datetime(values[k])
        if "state" in values and values["state"] not in TRIAL_STATES:
            raise InvalidSpec(f"unknown trial state {values['state']!r}", field="state")
        for attempt in range(2):
            try:
                with self.db.session(write=True) as s:
                    self._job(s, None, job_id)
                    row = s.scalars(
                        select(Trial).where(Trial.job_id == job_id, Trial.number == number)
                    ).first()
                    if row is None:
                        row = Trial(
                            job_id=job_id, number=number, state=values.get("state", "running"), params={}
                        )
                        s.add(row)
                    elif "state" in values:
                        trial_transition(row.state, values["state"], job_id=job_id, number=number)
                    for k, v in values.items():
                        setattr(row, k, v)
                    s.flush()
                    s.refresh(row)
                    if "state" in values:
                        self._count_done(s, job_id)
                    return TrialRecord.of(row)
            except IntegrityError:  # a concurrent insert of the same number: update it instead
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _count_done(self, s: Session, job_id: str) -> None:
        done = s.scalar(
            select(func.count())
            .select_from(Trial)
            .where(Trial.job_id == job_id, Trial.state.in_(FINISHED_TRIAL_STATES))
        )
        s.execute(update(Job).where(Job.id == job_id).values(trials_done=done or 0, updated_at=self.now()))

    def record_trial_finished(
        self, job_id: str, *, best_value: float | None, best_params: dict[str, Any] | None
    ) -> None:
        """Refresh ``trials_done`` and the best-so-far after a trial ends."""
        with self.db.session(write=True) as s:
            row = self._job(s, None, job_id, lock=True)
            if best_value is not None and finite(float(best_value)) is not None:
                row.best_value, row.best_params = float(best_value), best_params
            self._count_done(s, job_id)

    def prepare_resume(self, job_id: str) -> int:
        """Mark trials left ``running`` by a dead owner as ``interrupted``; return how many."""
        with self.db.session(write=True) as s:
            return self._interrupt_running_trials(s, job_id)

    def all_trials(self, tenant: str | None, job_id: str, page_size: int = 500) -> list[TrialRecord]:
        """Every trial of a job by number, read page by page."""
        trials: list[TrialRecord] = []
        while True:
            page, total = self.list_trials(tenant, job_id, limit=page_size, offset=len(trials))
            trials.extend(page)
            if not page or len(trials) >= total:
                return trials

    def get_trial(self, tenant: str | None, job_id: str, number: int) -> TrialRecord:
        with self.db.session() as s:
            return TrialRecord.of(self._trial(s, tenant, job_id, number))

    def _trial(self, s: Session, tenant: str | None, job_id: str, number: int) -> Trial:
        self._job(s, tenant, job_id)
        row = s.scalars(select(Trial).where(Trial.job_id == job_id, Trial.number == number)).first()
        if row is None:
            raise TrialNotFound(f"trial {number} of job {job_id} not found", field="number")
        return row

    def list_trials(
        self, tenant: str | None, job_id: str, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[TrialRecord], int]:
        """One page of a job's trials by number, and the total count."""
        with self.db.session() as s:
            self._job(s, tenant, job_id)
            conds = [Trial.job_id == job_id]
            if state is not None:
                conds.append(Trial.state == state)
            total = s.scalar(select(func.count()).select_from(Trial).where(*conds)) or 0
            rows = s.scalars(
                select(Trial).where(*conds).order_by(Trial.number).limit(limit).offset(offset)
            ).all()
            return [TrialRecord.of(r) for r in rows], total

    # Retries --------------------------------------------------------------------------------------------
    def retry_trial(
        self, tenant: str | None, job_id: str, number: int, *, max_trials: int | None = None
    ) -> JobRecord:
        """Ask for a failed or pruned trial to run again with the same parameters.

        The request is queued on the job (the runner enqueues it into the Optuna study) and adds one
        trial to the budget; a finished job goes back to the queue. A total above ``max_trials`` (the
        per-job ceiling) is ``InvalidSpec`` on ``number``.
        """

        def add_request(row: Job) -> None:
            s = object_session(row)
            assert s is not None
            trial = self._trial(s, tenant, job_id, number)
            if trial.state not in RETRYABLE_TRIAL_STATES:
                raise JobStateConflict(
                    f"trial {number} is {trial.state}; only failed or pruned trials can be retried",
                    field="number",
                    details={"state": trial.state},
                )
            if any(r.get("number") == number for r in row.retry_requests):
                raise JobStateConflict(f"trial {number} already has a pending retry", field="number")
            check_trial_ceiling(row.trials_total + 1, max_trials, field="number", current=row.trials_total)
            request = {"number": number, "params": trial.params, "requested_at": self.now().isoformat()}
            row.retry_requests = [*row.retry_requests, request]
            row.extra_trials += 1
            row.trials_total += 1

        return self._change(
            job_id, "retry", tenant=tenant, apply=add_request,
            message=f"retry of trial {number} requested", data={"number": number},
        )  # fmt: skip

    def take_retry_requests(self, job_id: str) -> list[dict[str, Any]]:
        """Pop the pending retries: the parameters of each trial to run again, oldest first."""
        with self.db.session(write=True) as s:
            row = self._job(s, None, job_id, lock=True)
            pending = list(row.retry_requests)
            if pending:
                row.retry_requests = []
                self._event(
                    s, job_id, "retries_enqueued", f"{len(pending)} retried trial(s) enqueued",
                    {"numbers": [r.get("number") for r in pending]},
                )  # fmt: skip
            return [dict(r["params"]) for r in pending]

    # Events -------------------------------------------------------------------------------------------
    def add_event(
        self, job_id: str, kind: str, message: str = "", data: dict[str, Any] | None = None
    ) -> None:
        """Append to the job's event log."""
        with self.db.session(write=True) as s:
            self._job(s, None, job_id)
            self._event(s, job_id, kind, message, data)

    def list_events(
        self,
        tenant: str | None,
        job_id: str,
        *,
        after_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[EventRecord], int]:
        """One page of a job's events, oldest first (``after_id`` to poll for new ones), and the total."""
        with self.db.session() as s:
            self._job(s, tenant, job_id)
            conds = [JobEvent.job_id == job_id]
            if after_id is not None:
                conds.append(JobEvent.id > after_id)
            total = s.scalar(select(func.count()).select_from(JobEvent).where(*conds)) or 0
            rows = s.scalars(
                select(JobEvent).where(*conds).order_by(JobEvent.id).limit(limit).offset(offset)
            ).all()
            return [EventRecord.of(r) for r in rows], total
