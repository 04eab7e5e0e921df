"""The runner: claims queued jobs from the job store and drives the engine on Ray.

One runner process (inside ``autoft serve`` or standalone as ``autoft runner``) owns each job it claims
through a lease that a heartbeat thread renews; a job whose owner died (lease expired) is claimed again by
any runner and *resumed*: the engine continues its Optuna study, so completed trials are not rerun. The
heartbeat also refreshes the job's cancel flag, so a cancel stops the trials within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from autoft_service.engine import Engine, JobHandles, JobListener, TrialEvent, ensure_ray
from autoft_service.engine.dispatch import start_resident_workers
from autoft_service.errors import AutoFTError, BackendUnavailable, JobCancelled
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from autoft_service.store import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_retry(fn: Callable[..., T], *args: Any, patience_s: float = 120.0, **kwargs: Any) -> T:
    """Call a job-store write, retrying while the database is unavailable (e.g. restarting) for up to
    ``patience_s`` seconds, so a short database outage neither fails the search nor loses its records."""
    deadline = time.monotonic() + patience_s
    delay = 0.2
    while True:
        try:
            return fn(*args, **kwargs)
        except BackendUnavailable as e:
            if time.monotonic() > deadline:
                raise
            log.warning("job store unavailable, retrying in %.1fs: %s", delay, e)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class _RetryingStore:
    """The job store as the listener sees it: every call goes through :func:`with_retry`."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        return (lambda *a, **k: with_retry(attr, *a, **k)) if callable(attr) else attr


class StoreListener(JobListener):
    """Mirrors the engine's progress into the job store (trials table, progress, events).

    Writes run inside the driver's Tune callbacks: they retry through database outages instead of raising
    into the search."""

    def __init__(self, store: JobStore, job_id: str, mode: str) -> None:
        self.store: Any = _RetryingStore(store)
        self._direct = store  # for reads that must not wait out an outage
        self.job_id = job_id
        self.mode = mode
        self.cancel_requested = False
        self.lost_lease = False
        self.best: float | None = None
        self.best_params: dict[str, Any] | None = None
        self.lock = threading.Lock()

    def handles(self, handles: JobHandles) -> None:
        self.store.set_handles(
            self.job_id,
            experiment_id=handles.experiment_id,
            parent_run_id=handles.parent_run_id,
            study_name=handles.study_name,
        )

    def stage(self, name: str, detail: dict[str, Any]) -> None:
        self.store.add_event(self.job_id, f"stage:{name}", name, detail)
        if name == "search":
            self.store.update_progress(self.job_id, trials_total=detail["trials_total"])

    def trial_started(self, ev: TrialEvent) -> None:
        if ev.number is None:
            return
        self.store.upsert_trial(
            self.job_id, ev.number, state="running", tune_trial_id=ev.tune_trial_id, params=ev.params,
            mlflow_run_id=ev.mlflow_run_id, started_at=ev.started_at,
        )  # fmt: skip

    def trial_reported(self, ev: TrialEvent, metrics: dict[str, float]) -> None:
        if ev.number is not None:
            self.store.upsert_trial(self.job_id, ev.number, value=ev.value, last_step=ev.last_step)

    def trial_finished(self, ev: TrialEvent) -> None:
        if ev.number is None:
            return
        self.store.upsert_trial(
            self.job_id, ev.number, state=ev.state, value=ev.value, last_step=ev.last_step,
            finished_at=ev.finished_at, error=ev.error,
        )  # fmt: skip
        with self.lock:
            if ev.state == "completed" and ev.value is not None:
                better = self.best is None or (
                    ev.value > self.best if self.mode == "max" else ev.value < self.best
                )
                if better:
                    self.best, self.best_params = ev.value, ev.params
            best, params = self.best, self.best_params
        self.store.record_trial_finished(self.job_id, best_value=best, best_params=params)

    def reconcile(self, finished: list[TrialEvent]) -> None:
        records = {r.number: r for r in self.store.all_trials(None, self.job_id)}
        fixed = 0
        for ev in finished:
            rec = records.get(ev.number)  # type: ignore[arg-type]
            if rec is None or rec.state != ev.state:
                self.store.upsert_trial(
                    self.job_id, ev.number, state=ev.state, value=ev.value, params=ev.params,  # type: ignore[arg-type]
                    tune_trial_id=ev.tune_trial_id or None,
                )  # fmt: skip
                fixed += 1
        if fixed:
            self.store.record_trial_finished(self.job_id, best_value=None, best_params=None)
            self.store.add_event(
                self.job_id, "trials_reconciled", f"{fixed} trial record(s) corrected from the study"
            )

    def should_cancel(self) -> bool:
        return self.cancel_requested or self.lost_lease

    def cancel_now(self) -> bool:
        """Read the cancel flag from the store (the heartbeat refreshes it only every few seconds)."""
        if not self.should_cancel():
            try:
                self.cancel_requested = self._direct.cancel_requested(self.job_id)
            except AutoFTError as e:  # a database blip: the heartbeat will catch up
                log.warning("could not read the cancel flag of %s: %s", self.job_id, e)
        return self.should_cancel()


class Runner:
    """Claims jobs and runs them, at most ``settings.max_concurrent_jobs`` at a time, in threads."""

    def __init__(self, settings: Settings, store: JobStore, *, runner_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = Engine(settings)
        self.runner_id = runner_id or f"runner-{uuid.uuid4().hex[:10]}"
        self.stop_event = threading.Event()
        self.active: dict[str, threading.Thread] = {}
        self.poll_seconds = 0.5
        self._thread: threading.Thread | None = None

    # Lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the claim loop in a background thread (used by ``autoft serve``).

        Ray is started here, in the calling (main) thread: a local Ray runtime's processes die with the
        thread that started them (Linux parent-death signal), so it must not start in a job thread. The
        resident workers start with it, in the background (one per CPU of the runtime)."""
        ensure_ray(self.settings)
        start_resident_workers(self.settings, wait=False)
        self._thread = threading.Thread(target=self.run_forever, name="autoft-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        ensure_ray(self.settings)
        log.info("runner %s started", self.runner_id)
        while not self.stop_event.is_set():
            self.active = {k: t for k, t in self.active.items() if t.is_alive()}
            claimed = False
            if len(self.active) < self.settings.max_concurrent_jobs:
                try:
                    job = self.store.claim_next_job(self.runner_id, self.settings.runner_lease_seconds)
                except AutoFTError as e:
                    log.warning("runner cannot claim jobs: %s", e)
                    job = None
                if job is not None:
                    claimed = True
                    t = threading.Thread(
                        target=self.run_job, args=(job.id,), name=f"job-{job.id}", daemon=True
                    )
                    self.active[job.id] = t
                    t.start()
            if not claimed:
                self.stop_event.wait(self.poll_seconds)

    # One job --------------------------------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        job = self.store.get_job(None, job_id)
        spec = parse_spec(job.spec, data_roots=self.settings.data_root_paths)
        listener = StoreListener(self.store, job_id, spec.objective.mode)
        listener.best, listener.best_params = job.best_value, job.best_params
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, listener, beat_stop), daemon=True)
        beat.start()
        try:
            self.store.prepare_resume(job_id)  # trials left running by a dead owner → interrupted
            if job.cancel_requested:  # cancelled while its previous owner was dying: do not restart it
                raise JobCancelled("cancel requested before the job resumed")
            self.store.mark_running(job_id, self.runner_id)
            handles = JobHandles(
                job.mlflow_experiment_id, job.mlflow_parent_run_id, job.optuna_study_name, tenant=job.tenant
            )
            extra = job.extra_trials
            while True:
                retries = self.store.take_retry_requests(job_id)
                if retries:
                    self.engine.enqueue(spec, handles, job_id, retries)
                result = self.engine.run(
                    spec, job_id=job_id, listener=listener, handles=handles, extra_trials=extra
                )
                # an extend or a retry that arrived while this run was under way: continue the same study
                latest = self.store.get_job(None, job_id)
                if latest.extra_trials == extra or latest.cancel_requested:
                    break
                extra = latest.extra_trials
        except JobCancelled:
            if listener.lost_lease:
                log.warning("job %s: lease lost to another runner; stopped here", job_id)
            else:
                with_retry(self.store.mark_cancelled, job_id, runner_id=self.runner_id)
        except Exception as e:  # the job fails, the runner lives on
            log.error("job %s failed: %s", job_id, traceback.format_exc())
            if not listener.lost_lease:
                with_retry(
                    self.store.mark_failed, job_id, f"{type(e).__name__}: {e}", runner_id=self.runner_id
                )
        else:
            with_retry(self.store.mark_succeeded, job_id, result.to_dict(), runner_id=self.runner_id)
            self._log_report(job_id, result.handles.parent_run_id)
        finally:
            beat_stop.set()
            beat.join(5)
            with_retry(self.store.release, job_id, self.runner_id)

    def _log_report(self, job_id: str, parent_run_id: str | None) -> None:
        """Attach the per-job HTML report (also served at GET /v1/jobs/{id}/report) to the job's MLflow run."""
        from autoft_service.report import render_report

        try:
            job = self.store.get_job(None, job_id)
            if parent_run_id:
                html = render_report(job, self.store.all_trials(None, job_id))
                self.engine.tracker.client.log_text(parent_run_id, html, "report.html")
        except Exception as e:  # a missing report must not fail a finished job
            log.warning("job %s: report not logged: %s", job_id, e)

    def _heartbeat(self, job_id: str, listener: StoreListener, stop: threading.Event) -> None:
        while not stop.wait(self.settings.runner_heartbeat_seconds):
            try:
                if not self.store.heartbeat(job_id, self.runner_id, self.settings.runner_lease_seconds):
                    listener.lost_lease = True
                    return
                listener.cancel_requested = self.store.cancel_requested(job_id)
            except AutoFTError as e:  # a database blip: keep going, the lease has slack
                log.warning("heartbeat for %s failed: %s", job_id, e)


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass (used by tests and the CLI)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def readiness_checks(settings: Settings, runner: Runner | None) -> dict[str, Any]:
    """Checks for ``GET /readyz``: MLflow store reachable, and Ray up when this process runs jobs."""
    from autoft_service.tracking import Tracker

    tracker = Tracker(settings.tracking_uri, settings.artifact_location)

    def mlflow_check() -> None:
        tracker.ensure_store()

    def ray_check() -> None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("Ray is not connected")
        ray.cluster_resources()

    checks: dict[str, Any] = {"mlflow": mlflow_check}
    if runner is not None:
        checks["ray"] = ray_check
    return checks
