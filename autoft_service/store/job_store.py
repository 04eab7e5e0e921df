"""``JobStore``: the one object the API, the runner and the CLI use to read and change jobs."""

from __future__ import annotations

from autoft_service.store.keys import KeyOps
from autoft_service.store.stats import StatsOps
from autoft_service.store.trials import TrialOps


class JobStore(TrialOps, KeyOps, StatsOps):
    """Jobs, trials, events and API keys in one SQL database (SQLite or PostgreSQL).

    ``JobStore(url)`` owns an engine; call :meth:`init_db` once to create / migrate the schema. Every
    method is one transaction; database outages raise ``BackendUnavailable``; illegal state changes raise
    ``JobStateConflict`` (see :mod:`autoft_service.store.transitions`); a job of another tenant is
    ``JobNotFound``. Pass ``tenant=None`` only from trusted code (runners, admin CLI).
    """
