"""The Tune callback on the driver: every trial recorded as an MLflow child run, its events sent to the listener.

MLflow writes are queued and applied in order by a writer thread of their own, off the path between one
trial's result and the next trial's start; while the tracking server is unreachable they wait there and the
search goes on. At the end of the search the queue gets a grace period, then what is left is reported lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from autoft_service.engine.events import JobListener, TrialEvent
from autoft_service.search.searcher import AutoFTOptunaSearch
from autoft_service.search.space import full_params
from autoft_service.spec import SearchSpec
from autoft_service.tracking import Tracker, run_status_for
from workers.trainable import flatten_config
from workers.trial_config import START_RESULT_KEY

log = logging.getLogger(__name__)


def _run_id(ev: TrialEvent) -> str:
    """The trial's MLflow run. Writes are applied in order, so its ``start`` has landed before any other."""
    if ev.mlflow_run_id is None:
        raise RuntimeError(f"trial {ev.number} has no MLflow run yet")
    return ev.mlflow_run_id


@dataclass
class _Write:
    """One queued MLflow write of a trial."""

    ev: TrialEvent
    what: str
    op: Callable[[TrialEvent], None]
    deferred: bool = False  # counted in ``SearchCallback.deferred``


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
        #: The starting model's scores, when a trial sent them (``TrialContext.score_start``).
        self.start: dict[str, Any] | None = None
        # MLflow writes in order, from a writer thread; while the tracking server is unreachable they wait
        # here and the search goes on. Whatever is still pending when the search ends (after a grace
        # period) is reported lost.
        self.pending: deque[_Write] = deque()
        self.deferred = 0  # writes delayed by a failing tracking server (each counted once)
        self._failing = False  # the write at the head of the queue failed and is being retried
        self.lost: list[str] = []
        self.retry_s = 1.0
        self._cv = threading.Condition()
        self._stop = False
        self._writer: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config for Tuner.restore, which this engine does not use (the Optuna study
        # is the resume point); the live tracker/listener stay in the driver.
        return {"job_id": self.job_id}

    def _track(self, ev: TrialEvent, what: str, op: Callable[[TrialEvent], None]) -> None:
        with self._cv:
            write = _Write(ev, what, op)
            if self._failing:
                write.deferred, self.deferred = True, self.deferred + 1
            self.pending.append(write)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="autoft-mlflow-writer", daemon=True)
                self._writer.start()
            self._cv.notify_all()

    def _write(self) -> None:
        """The writer thread: apply pending writes in order; a failed write is retried every ``retry_s``
        (the later ones wait behind it) until it lands or the search ends."""
        while True:
            with self._cv:
                while not self.pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                head = self.pending[0]
            try:
                head.op(head.ev)
            except Exception as e:  # tracking server down or erroring: keep the write, keep searching
                with self._cv:
                    if not self._failing:
                        log.warning("MLflow write deferred (%s of trial %s): %s", head.what, head.ev.number, e)
                    self._failing = True
                    for w in self.pending:  # the failing write and every one queued behind it
                        if not w.deferred:
                            w.deferred, self.deferred = True, self.deferred + 1
                    self._cv.notify_all()
                    self._cv.wait_for(lambda: self._stop, timeout=self.retry_s)
                continue
            with self._cv:
                self._failing = False
                self.pending.popleft()
                self._cv.notify_all()

    def flush(self, patience_s: float) -> bool:
        """Wait up to ``patience_s`` for the pending MLflow writes to land. True when nothing is pending."""
        with self._cv:
            return self._cv.wait_for(lambda: not self.pending, timeout=max(0.0, patience_s))

    def close(self) -> None:
        """Stop the writer: it finishes the write it is applying (within the client's own timeout), then
        leaves the rest in ``pending``."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(timeout=30.0)

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
        if self.start is None and isinstance(result.get(START_RESULT_KEY), dict):
            self.start = result[START_RESULT_KEY]
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
        landed = self.flush(self.grace_s)
        self.close()
        if not landed and self.pending:
            self.lost = [f"trial {w.ev.number}: {w.what}" for w in self.pending]
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
