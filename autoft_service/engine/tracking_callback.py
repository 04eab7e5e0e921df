"""The Tune callback on the driver: every trial recorded as an MLflow child run, its events sent to the listener.

MLflow writes are queued and applied in order; while the tracking server is unreachable they wait and the
search goes on. At the end of the search the queue gets a grace period, then what is left is reported lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from autoft_service.engine.events import JobListener, TrialEvent
from autoft_service.search.searcher import AutoFTOptunaSearch
from autoft_service.search.space import full_params
from autoft_service.spec import SearchSpec
from autoft_service.tracking import Tracker, run_status_for
from workers.trainable import flatten_config

log = logging.getLogger(__name__)


def _run_id(ev: TrialEvent) -> str:
    """The trial's MLflow run. Writes are applied in order, so its ``start`` has landed before any other."""
    if ev.mlflow_run_id is None:
        raise RuntimeError(f"trial {ev.number} has no MLflow run yet")
    return ev.mlflow_run_id

class SearchCallback(Callback):
    """Driver-side: records every trial in MLflow (child runs) and forwards events to the listener.

    ``grace_s``: how long the end of a search waits for an unreachable MLflow server to take the deferred
    writes (``Settings.tracking_grace_seconds``); what is still pending then is reported lost.
    """

    def __init__(
        self,
        *,
        tracker: Tracker,
        searcher: AutoFTOptunaSearch,
        listener: JobListener,
        job_id: str,
        experiment_id: str,
        parent_run_id: str,
        metric: str,
        full_steps: int,
        search: SearchSpec,
        grace_s: float = 120.0,
        tenant: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.tenant = tenant
        self.searcher = searcher
        self.listener = listener
        self.job_id = job_id
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.full_steps = full_steps
        self.search = search
        self.grace_s = grace_s
        self.events: dict[str, TrialEvent] = {}
        # MLflow writes in order; while the tracking server is unreachable they wait here and the search
        # goes on. Whatever is still pending when the search ends (after a grace period) is reported lost.
        self.pending: list[tuple[TrialEvent, str, Callable[[TrialEvent], None]]] = []
        self.deferred = 0
        self.lost: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config for Tuner.restore, which this engine does not use (the Optuna study
        # is the resume point); the live tracker/listener stay in the driver.
        return {"job_id": self.job_id}

    def _track(self, ev: TrialEvent, what: str, op: Callable[[TrialEvent], None]) -> None:
        self.pending.append((ev, what, op))
        self.flush(0.0)

    def flush(self, patience_s: float) -> bool:
        """Apply pending MLflow writes in order; retry for ``patience_s``. True when nothing is pending."""
        deadline = time.monotonic() + patience_s
        while self.pending:
            ev, what, op = self.pending[0]
            try:
                op(ev)
            except Exception as e:  # tracking server down or erroring: keep the write, keep searching
                if time.monotonic() >= deadline:
                    if self.deferred == 0 or len(self.pending) == 1:
                        log.warning("MLflow write deferred (%s of trial %s): %s", what, ev.number, e)
                    self.deferred += 1
                    return False
                time.sleep(1.0)
                continue
            self.pending.pop(0)
        return True

    def _event(self, trial: Any) -> TrialEvent:
        ev = self.events.get(trial.trial_id)
        if ev is None:
            number = self.searcher.optuna_number(trial.trial_id)
            params = full_params(self.search, flatten_config(trial.config))
            ev = TrialEvent(number, trial.trial_id, "running", params)
            self.events[trial.trial_id] = ev

            attempts = 0

            def start(e: TrialEvent) -> None:
                nonlocal attempts
                attempts += 1
                e.mlflow_run_id = self.tracker.start_child(
                    self.experiment_id,
                    self.parent_run_id,
                    self.job_id,
                    e.number,
                    e.params,
                    retry=attempts > 1,
                    tenant=self.tenant,
                )

            self._track(ev, "start", start)
            self.listener.trial_started(ev)
        return ev

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        ev = self._event(trial)
        metrics = {k: v for k, v in result.items() if "/" in k and not k.startswith("config/")}
        ev.last_step = int(result.get("step", ev.last_step))
        ev.value = result.get(self.metric, ev.value)
        step, ts = ev.last_step, int(time.time() * 1000)  # a retried write repeats the same points
        self._track(
            ev,
            f"metrics@{step}",
            lambda e: self.tracker.log_metrics(_run_id(e), metrics, step=step, timestamp_ms=ts),
        )
        self.listener.trial_reported(ev, metrics)

    def _finish(self, trial: Any, state: str, error: str | None = None) -> None:
        self._finish_event(self._event(trial), state, error)

    def _finish_event(self, ev: TrialEvent, state: str, error: str | None = None) -> None:
        if ev.finished_at is not None:
            return
        ev.state, ev.error, ev.finished_at = state, error, time.time()
        last_step = ev.last_step

        def close(e: TrialEvent) -> None:
            self.tracker.set_tags(_run_id(e), {"autoft.state": state, "autoft.last_step": str(last_step)})
            self.tracker.end_run(_run_id(e), run_status_for(state))

        self._track(ev, "close", close)
        self.listener.trial_finished(ev)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ev = self._event(trial)
        self._finish(trial, "pruned" if ev.last_step < self.full_steps else "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        err = None
        try:
            e = trial.get_error()
            err = str(e).strip().splitlines()[-1][:2000] if e is not None else None
        except Exception:  # the error file may be unreadable; the state is what matters
            err = "trial failed"
        self._finish(trial, "failed", err or "trial failed")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # trials still running when the search stops (a cancel, a lost lease) end here, in MLflow (KILLED)
        # and for the listener (the job store, the metrics), instead of staying "running"
        for ev in list(self.events.values()):
            if ev.finished_at is None:
                self._finish_event(ev, "interrupted", "stopped with the search")
        if not self.flush(self.grace_s):
            self.lost = [f"trial {ev.number}: {what}" for ev, what, _ in self.pending]
            log.error("MLflow unreachable: %d tracking writes lost: %s", len(self.lost), self.lost[:20])
            return
        # a create the HTTP client or this callback retried may have left a second run for a trial
        keep = {
            e.number: e.mlflow_run_id
            for e in self.events.values()
            if e.number is not None and e.mlflow_run_id is not None
        }
        if keep:
            try:
                n = self.tracker.delete_duplicate_children(self.experiment_id, self.parent_run_id, keep)
            except Exception as e:  # a leftover run is untidy, not wrong: never fail the search for it
                log.warning("could not check MLflow for duplicate trial runs: %s", e)
            else:
                if n:
                    log.warning("deleted %d duplicate trial run(s) left by retried MLflow writes", n)
