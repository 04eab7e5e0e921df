"""The runner's store listener: trial records follow the engine, and a resume corrects records a crash left
behind (the study finished a trial but the store never heard of its end)."""

from __future__ import annotations

from pathlib import Path

from autoft_service.engine import TrialEvent
from autoft_service.runner import StoreListener
from autoft_service.spec import parse_spec
from autoft_service.store import JobStore
from tests.conftest import small_spec


def test_reconcile_fixes_trials_a_crash_left_interrupted(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.init_db()
    job, _ = store.create_job("t", parse_spec(small_spec()))
    listener = StoreListener(store, job.id, "max")
    listener.trial_started(TrialEvent(0, "tid0", "running", {"optim/lr": 0.1}))
    listener.trial_started(TrialEvent(1, "tid1", "running", {"optim/lr": 0.2}))
    listener.trial_finished(TrialEvent(1, "tid1", "completed", {"optim/lr": 0.2}, value=0.5, finished_at=1.0))
    assert store.prepare_resume(job.id) == 1  # trial 0 was running when the owner died

    study_says = [
        TrialEvent(0, "tid0", "completed", {"optim/lr": 0.1}, value=0.7),
        TrialEvent(1, "tid1", "completed", {"optim/lr": 0.2}, value=0.5),
    ]
    listener.reconcile(study_says)
    trials, total = store.list_trials(None, job.id)
    assert total == 2
    assert {t.number: (t.state, t.value) for t in trials} == {0: ("completed", 0.7), 1: ("completed", 0.5)}
    assert store.get_job(None, job.id).trials_done == 2
    kinds = [e.kind for e in store.list_events(None, job.id)[0]]
    assert kinds.count("trials_reconciled") == 1
    listener.reconcile(study_says)  # idempotent: nothing left to correct
    assert [e.kind for e in store.list_events(None, job.id)[0]].count("trials_reconciled") == 1
