"""Aggregates for the Prometheus metrics, computed in the database at scrape time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, extract, func, select
from sqlalchemy.orm import InstrumentedAttribute

from autoft_service.store.base import StoreBase
from autoft_service.store.models import FINISHED_TRIAL_STATES, JOB_STATES, TRIAL_STATES, Job, Trial
from autoft_service.store.records import Histogram

DEFAULT_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class StatsOps(StoreBase):
    def count_jobs_by_state(self) -> dict[str, int]:
        """Jobs per state (every state present, zeros included)."""
        with self.db.session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {st: 0 for st in JOB_STATES} | {st: int(n) for st, n in rows}

    def count_trials_by_state(self) -> dict[str, int]:
        """Trials per state (every state present, zeros included)."""
        with self.db.session() as s:
            rows = s.execute(select(Trial.state, func.count()).group_by(Trial.state)).all()
        return {st: 0 for st in TRIAL_STATES} | {st: int(n) for st, n in rows}

    def _seconds(
        self, start: InstrumentedAttribute[Any], end: InstrumentedAttribute[Any]
    ) -> ColumnElement[float]:
        if self.db.dialect == "sqlite":
            return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
        return cast(extract("epoch", end - start), Float)

    def _histogram(
        self, seconds: ColumnElement[float], conds: Sequence[ColumnElement[bool]], buckets: Sequence[float]
    ) -> Histogram:
        cols = [func.sum(case((seconds <= b, 1), else_=0)) for b in buckets]
        with self.db.session() as s:
            row = s.execute(select(func.count(), func.sum(seconds), *cols).where(*conds)).one()
        count, total, counts = int(row[0] or 0), float(row[1] or 0.0), [int(c or 0) for c in row[2:]]
        return Histogram(
            buckets=[*zip(buckets, counts, strict=True), (float("inf"), count)], total=total, count=count
        )

    def trial_duration_histogram(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        """Wall time of finished trials (completed, pruned, failed)."""
        secs = self._seconds(Trial.started_at, Trial.finished_at)
        conds = [
            Trial.state.in_(FINISHED_TRIAL_STATES),
            Trial.started_at.is_not(None),
            Trial.finished_at.is_not(None),
        ]
        return self._histogram(secs, conds, buckets)

    def queue_wait_histogram(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        """Time from submission to the first start, for every job that has started."""
        secs = self._seconds(Job.created_at, Job.started_at)
        return self._histogram(secs, [Job.started_at.is_not(None)], buckets)
