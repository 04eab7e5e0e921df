"""The job-store test suite, run on every backend.

Each backend's folder has ``class TestXStore(StoreCases)`` and a conftest that imports the fixtures below
(``clock``, ``open_store``, ``store``) and provides ``store_url``: a fresh, migrated database per test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from autoft_service.errors import (
    InvalidSpec,
    JobNotFound,
    JobStateConflict,
    TrialNotFound,
    Unauthorized,
)
from autoft_service.store import JobStore, JobSummaryRecord, current_revision
from autoft_service.store.db import VERSION_TABLE
from autoft_service.store.models import ApiKey, Base, Job
from tests.suites.store_helpers import FakeClock, spec


# Backend-neutral fixtures (each backend's conftest imports them) ------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(store_url: str, clock: FakeClock) -> Iterator[Callable[[], JobStore]]:
    """Open another ``JobStore`` (its own engine, like another process) on the test database."""
    stores: list[JobStore] = []

    def make() -> JobStore:
        s = JobStore(store_url, clock=clock)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], JobStore]) -> JobStore:
    return open_store()


LEASE = 10.0


def run_to(store: JobStore, state: str, tenant: str = "acme") -> str:
    """A job of ``tenant`` brought to ``state`` through the store's own transitions."""
    job, _ = store.create_job(tenant, spec())
    if state == "queued":
        return job.id
    claimed = store.claim_next_job("r0", LEASE)
    assert claimed is not None and claimed.id == job.id
    if state == "succeeded":
        store.mark_succeeded(job.id, {"best_value": 0.9, "best_params": {"optim/lr": 0.01}, "results": []})
    elif state == "failed":
        store.mark_failed(job.id, "boom")
    elif state == "cancelled":
        store.mark_cancelled(job.id)
    return job.id


class StoreCases:
    # Schema -----------------------------------------------------------------------------------------------
    def test_migrations_match_models_and_are_idempotent(self, store: JobStore) -> None:
        store.init_db()  # a second run is a no-op
        assert current_revision(store.db.engine) == "0001"
        with store.db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
        assert diff == []

    # Submission ---------------------------------------------------------------------------------------------
    def test_create_job_stores_normalised_spec_and_utc_times(self, store: JobStore) -> None:
        s = spec("alpha")
        job, created = store.create_job("acme", s)
        assert created and job.state == "queued" and len(job.id) == 32
        got = store.get_job("acme", job.id)
        assert got.spec == s.model_dump(mode="json")
        assert got.spec["budget"]["trials"] == got.trials_total == s.budget.trials
        assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
        assert got.created_at == job.created_at
        events, _ = store.list_events("acme", job.id)
        assert [e.kind for e in events] == ["created"]

    def test_idempotency_key_returns_same_job_per_tenant(self, store: JobStore) -> None:
        first, created = store.create_job("acme", spec(), idempotency_key="k-1")
        again, created_again = store.create_job("acme", spec(), idempotency_key="k-1")
        assert created and not created_again and again.id == first.id
        other, other_created = store.create_job("globex", spec(), idempotency_key="k-1")
        assert other_created and other.id != first.id
        assert store.list_jobs("acme")[1] == 1

    def test_concurrent_submissions_with_one_key_make_one_job(
        self, open_store: Callable[[], JobStore]
    ) -> None:
        stores = [open_store(), open_store()]
        results: list[tuple[str, bool]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def submit(n: int) -> None:
            try:
                barrier.wait()
                job, created = stores[n % 2].create_job("acme", spec(), idempotency_key="same")
                results.append((job.id, created))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len({job_id for job_id, _ in results}) == 1 and sum(created for _, created in results) == 1
        assert stores[0].list_jobs("acme")[1] == 1

    def test_idempotency_key_with_different_spec_conflicts(self, store: JobStore) -> None:
        store.create_job("acme", spec("a"), idempotency_key="k-1")
        with pytest.raises(JobStateConflict) as e:
            store.create_job("acme", spec("b"), idempotency_key="k-1")
        assert e.value.field == "Idempotency-Key"
        assert store.list_jobs("acme")[1] == 1

    def test_warm_start_only_from_own_jobs(self, store: JobStore) -> None:
        mine = store.create_job("acme", spec("a"))[0].id
        theirs = store.create_job("globex", spec("b"))[0].id
        ok, _ = store.create_job("acme", spec("c", search={"warm_start_from": [mine]}))
        assert ok.spec["search"]["warm_start_from"] == [mine]
        with pytest.raises(InvalidSpec) as e:
            store.create_job("acme", spec("d", search={"warm_start_from": [mine, theirs]}))
        assert e.value.field == "search.warm_start_from.1"
        assert store.list_jobs("acme")[1] == 2

    def test_another_tenants_job_is_not_found(self, store: JobStore) -> None:
        job, _ = store.create_job("acme", spec())
        with pytest.raises(JobNotFound):
            store.get_job("globex", job.id)
        with pytest.raises(JobNotFound):
            store.request_cancel("globex", job.id)
        with pytest.raises(JobNotFound):
            store.list_trials("globex", job.id)
        assert store.get_job(None, job.id).tenant == "acme"  # runners see every job

    def test_list_jobs_paginates_newest_first_and_filters(self, store: JobStore) -> None:
        ids = [store.create_job("acme", spec(f"j{i}"))[0].id for i in range(5)]
        store.create_job("globex", spec("other"))
        page, total = store.list_jobs("acme", limit=2, offset=2)
        assert total == 5 and [j.id for j in page] == ids[::-1][2:4]
        store.request_cancel("acme", ids[0])
        cancelled, n = store.list_jobs("acme", state="cancelled")
        assert n == 1 and cancelled[0].id == ids[0]
        with pytest.raises(InvalidSpec):
            store.list_jobs("acme", state="bogus")

    def test_a_new_job_has_sql_null_results_and_its_created_event(self, store: JobStore) -> None:
        job, created = store.create_job("acme", spec("a"))
        assert created and store.get_job("acme", job.id) == job
        with store.db.engine.connect() as conn:
            row = conn.execute(
                select(Job.best_params.is_(None), Job.results.is_(None)).where(Job.id == job.id)
            )
            assert row.one() == (True, True)  # SQL NULL, not JSON null: no value yet
        events, n = store.list_events("acme", job.id)
        assert n == 1 and events[0].kind == "created" and events[0].data is None

    def test_an_async_submission_stores_what_a_sync_one_does(self, store: JobStore) -> None:
        sync_job, _ = store.create_job("acme", spec("s"))
        async_job, created = asyncio.run(store.create_job_async("acme", spec("a")))
        assert created and store.get_job("acme", async_job.id) == async_job
        assert {
            k: v for k, v in dataclasses.asdict(async_job).items() if k not in ("id", "name", "spec")
        } == {k: v for k, v in dataclasses.asdict(sync_job).items() if k not in ("id", "name", "spec")} | {
            "created_at": async_job.created_at,
            "updated_at": async_job.updated_at,
        }
        with store.db.engine.connect() as conn:
            nulls = conn.execute(
                select(Job.best_params.is_(None), Job.results.is_(None)).where(Job.id == async_job.id)
            )
            assert nulls.one() == (True, True)
        [event], _ = store.list_events("acme", async_job.id)
        assert event.kind == "created" and event.message == "job 'a' queued" and event.data is None
        with pytest.raises(InvalidSpec):  # the trial ceiling holds on this path too
            asyncio.run(store.create_job_async("acme", spec("big"), max_trials=1))
        again, created = asyncio.run(store.create_job_async("acme", spec("k"), "key-1"))
        assert created and asyncio.run(store.create_job_async("acme", spec("k"), "key-1")) == (again, False)

    def test_job_summaries_are_the_listed_jobs_without_their_spec(self, store: JobStore) -> None:
        for i in range(3):
            store.create_job("acme", spec(f"j{i}"))
        store.request_cancel("globex", store.create_job("globex", spec("other"))[0].id)
        for tenant, state in [
            ("acme", None),
            ("acme", "queued"),
            (None, None),
            (None, "cancelled"),
            ("globex", "cancelled"),
        ]:
            full, total = store.list_jobs(tenant, state=state, limit=2, offset=1)
            summaries, n = store.list_job_summaries(tenant, state=state, limit=2, offset=1)
            assert n == total
            assert [dataclasses.asdict(s) for s in summaries] == [
                {f: getattr(j, f) for f in JobSummaryRecord.__dataclass_fields__} for j in full
            ]
        assert store.list_job_summaries("acme")[1] == 3 and store.list_job_summaries(None)[1] == 4

    def test_async_reads_match_the_sync_ones(self, store: JobStore) -> None:
        ids = [store.create_job("acme", spec(f"j{i}"))[0].id for i in range(3)]
        store.request_cancel("acme", ids[1])
        store.create_job("globex", spec("other"))

        async def reads() -> None:
            for tenant in ("acme", None):
                assert await store.get_job_async(tenant, ids[0]) == store.get_job(tenant, ids[0])
            with pytest.raises(JobNotFound):
                await store.get_job_async("globex", ids[0])
            for tenant, state in [("acme", None), ("acme", "cancelled"), (None, None), (None, "queued")]:
                for limit, offset in [(2, 0), (2, 1), (10, 5)]:
                    assert await store.list_job_summaries_async(
                        tenant, state=state, limit=limit, offset=offset
                    ) == store.list_job_summaries(tenant, state=state, limit=limit, offset=offset)
            with pytest.raises(InvalidSpec):
                await store.list_job_summaries_async("acme", state="bogus")
            job = await store.get_job_async("acme", ids[0])
            assert (
                job.created_at.tzinfo is UTC and job.updated_at.tzinfo is UTC
            )  # as the sync reads give them

        asyncio.run(reads())
        asyncio.run(reads())  # a second event loop (the async pool follows the running loop)

    # Claims and leases ----------------------------------------------------------------------------------
    def test_claim_takes_oldest_queued_job_with_a_lease(self, store: JobStore, clock: FakeClock) -> None:
        first = store.create_job("acme", spec("a"))[0]
        second = store.create_job("acme", spec("b"))[0]
        job = store.claim_next_job("r1", LEASE)
        assert job is not None and job.id == first.id
        assert job.state == "running" and job.owner == "r1" and job.attempts == 1
        assert job.started_at is not None and job.lease_expires_at is not None
        assert timedelta(seconds=9) < job.lease_expires_at - clock.t <= timedelta(seconds=LEASE)
        nxt = store.claim_next_job("r2", LEASE)
        assert nxt is not None and nxt.id == second.id
        assert store.claim_next_job("r3", LEASE) is None

    def test_live_lease_is_not_reclaimed_and_heartbeat_extends_it(
        self, store: JobStore, clock: FakeClock
    ) -> None:
        job_id = run_to(store, "running")
        clock.advance(LEASE * 0.8)
        assert store.claim_next_job("r2", LEASE) is None
        assert store.heartbeat(job_id, "r0", LEASE)
        clock.advance(LEASE * 0.8)  # past the first lease, within the renewed one
        assert store.claim_next_job("r2", LEASE) is None
        assert not store.heartbeat(job_id, "r2", LEASE)  # not the owner

    def test_expired_lease_is_reclaimed_and_old_owner_loses_it(
        self, store: JobStore, clock: FakeClock
    ) -> None:
        job_id = run_to(store, "running")
        clock.advance(LEASE + 1)
        taken = store.claim_next_job("r2", LEASE)
        assert taken is not None and taken.id == job_id
        assert taken.owner == "r2" and taken.attempts == 2 and taken.state == "running"
        assert store.heartbeat(job_id, "r0", LEASE) is False
        assert store.release(job_id, "r0") is False  # the old owner cannot drop the new owner's lease
        assert store.get_job(None, job_id).owner == "r2"
        assert store.heartbeat(job_id, "r2", LEASE) is True
        events, _ = store.list_events(None, job_id)
        claims = [e for e in events if e.kind == "claimed"]
        assert claims[-1].data == {"runner": "r2", "attempt": 2, "previous_owner": "r0"}

    def test_released_running_job_is_claimable_again(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        assert store.release(job_id, "r0")
        job = store.claim_next_job("r1", LEASE)
        assert job is not None and job.id == job_id and job.owner == "r1"

    def test_concurrent_claims_never_share_a_job(self, open_store: Callable[[], JobStore]) -> None:
        stores = [open_store(), open_store()]  # two engines: like two runner processes
        ids = {stores[0].create_job("acme", spec(f"j{i}"))[0].id for i in range(6)}
        claimed: list[tuple[str, str]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)
        lock = threading.Lock()

        def runner(n: int) -> None:
            store = stores[n % 2]
            try:
                barrier.wait()
                while (job := store.claim_next_job(f"r{n}", 60)) is not None:
                    with lock:
                        claimed.append((job.id, f"r{n}"))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=runner, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(j for j, _ in claimed) == sorted(ids)  # each job exactly once
        for job_id, runner_id in claimed:
            assert stores[0].get_job(None, job_id).owner == runner_id

    # State transitions ------------------------------------------------------------------------------------
    def test_lifecycle_to_succeeded(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.mark_running(job_id, "r0")  # idempotent for the owner (a resumed job)
        done = store.mark_succeeded(
            job_id, {"best_value": 0.75, "best_params": {"x": 1}, "results": [{"m": 1}]}
        )
        assert done.state == "succeeded" and done.finished_at is not None
        assert done.results is not None and done.results["results"] == [{"m": 1}]
        assert done.best_value == 0.75 and done.owner is None
        kinds = [e.kind for e in store.list_events(None, job_id)[0]]
        assert "state:succeeded" in kinds

    @pytest.mark.parametrize(
        ("state", "action"),
        [("queued", "mark_succeeded"), ("succeeded", "mark_failed"), ("cancelled", "mark_running"),
         ("failed", "mark_cancelled")],
    )  # fmt: skip
    def test_illegal_transitions_conflict(self, store: JobStore, state: str, action: str) -> None:
        job_id = run_to(store, state)
        args = {"mark_succeeded": ({},), "mark_failed": ("x",)}.get(action, ())
        with pytest.raises(JobStateConflict) as e:
            getattr(store, action)(job_id, *args)
        assert e.value.field == "state"
        assert store.get_job(None, job_id).state == state  # nothing changed

    def test_only_the_owner_may_finish_a_job(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        with pytest.raises(JobStateConflict):
            store.mark_succeeded(job_id, {}, runner_id="intruder")
        assert store.mark_failed(job_id, "oom", runner_id="r0").error == "oom"

    def test_cancel_queued_job_is_immediate(self, store: JobStore) -> None:
        job_id = run_to(store, "queued")
        job = store.request_cancel("acme", job_id)
        assert job.state == "cancelled" and job.finished_at is not None
        assert store.claim_next_job("r1", LEASE) is None

    def test_cancel_running_job_flags_it_for_the_runner(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        assert not store.cancel_requested(job_id)
        job = store.request_cancel("acme", job_id)
        assert job.state == "running" and job.cancel_requested and store.cancel_requested(job_id)
        assert store.mark_cancelled(job_id).state == "cancelled"

    @pytest.mark.parametrize("end", ["cancelled", "failed", "succeeded"])
    def test_a_finished_job_has_no_running_trial(self, store: JobStore, end: str) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="completed", value=0.5, params={})
        store.upsert_trial(job_id, 1, state="running", params={})
        {
            "cancelled": lambda: store.mark_cancelled(job_id),
            "failed": lambda: store.mark_failed(job_id, "boom"),
            "succeeded": lambda: store.mark_succeeded(job_id, {}),
        }[end]()
        states = {t.number: t.state for t in store.all_trials(None, job_id)}
        assert states == {0: "completed", 1: "interrupted"}
        assert store.get_trial(None, job_id, 1).finished_at is not None
        assert store.count_trials_by_state()["running"] == 0

    @pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
    def test_cancel_finished_job_conflicts(self, store: JobStore, state: str) -> None:
        job_id = run_to(store, state)
        with pytest.raises(JobStateConflict):
            store.request_cancel("acme", job_id)

    # Extend ----------------------------------------------------------------------------------------------
    def test_extend_queued_and_running_jobs_grows_the_budget(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        before = store.get_job(None, job_id)
        job = store.extend_job("acme", job_id, 5)
        assert job.state == "running" and job.extra_trials == 5
        assert job.trials_total == before.trials_total + 5

    def test_extend_succeeded_job_requeues_it(self, store: JobStore) -> None:
        job_id = run_to(store, "succeeded")
        job = store.extend_job("acme", job_id, 3)
        assert job.state == "queued" and job.finished_at is None and job.owner is None
        again = store.claim_next_job("r9", LEASE)
        assert again is not None and again.id == job_id and again.extra_trials == 3

    @pytest.mark.parametrize("state", ["failed", "cancelled"])
    def test_extend_failed_or_cancelled_job_conflicts(self, store: JobStore, state: str) -> None:
        job_id = run_to(store, state)
        with pytest.raises(JobStateConflict):
            store.extend_job("acme", job_id, 3)
        assert store.get_job(None, job_id).extra_trials == 0

    @pytest.mark.parametrize("n", [0, -1, 10_001])
    def test_extend_out_of_range_is_invalid(self, store: JobStore, n: int) -> None:
        job_id = run_to(store, "queued")
        with pytest.raises(InvalidSpec) as e:
            store.extend_job("acme", job_id, n)
        assert e.value.field == "trials"

    def test_extend_beyond_the_ceiling_changes_nothing(self, store: JobStore) -> None:
        job_id = run_to(store, "succeeded")
        total = store.get_job(None, job_id).trials_total
        events = store.list_events(None, job_id)[1]
        with pytest.raises(InvalidSpec) as e:
            store.extend_job("acme", job_id, 5, max_trials=total + 4)
        assert e.value.field == "trials" and e.value.details["max_trials_per_job"] == total + 4
        job = store.get_job(None, job_id)
        assert (job.state, job.trials_total, job.extra_trials) == ("succeeded", total, 0)  # not requeued
        assert store.list_events(None, job_id)[1] == events
        assert store.extend_job("acme", job_id, 4, max_trials=total + 4).trials_total == total + 4

    def test_concurrent_extends_never_pass_the_ceiling(self, store: JobStore) -> None:
        job_id = run_to(store, "queued")
        total = store.get_job(None, job_id).trials_total
        results: list[bool] = []

        def extend() -> None:
            try:
                store.extend_job("acme", job_id, 3, max_trials=total + 10)
                results.append(True)
            except InvalidSpec:
                results.append(False)

        threads = [threading.Thread(target=extend) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 3 and store.get_job(None, job_id).trials_total == total + 9

    def test_submission_above_the_ceiling_is_invalid(self, store: JobStore) -> None:
        with pytest.raises(InvalidSpec) as e:
            store.create_job("acme", spec(budget={"trials": 11}), max_trials=10)
        assert e.value.field == "budget.trials" and store.list_jobs(None)[1] == 0

    # Trials -----------------------------------------------------------------------------------------------
    def test_upsert_trial_creates_updates_and_counts_done(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        t = store.upsert_trial(
            job_id, 0, state="running", params={"optim/lr": 0.1}, started_at=1_900_000_000.0
        )
        assert t.started_at is not None and t.started_at.tzinfo is not None
        assert t.started_at.timestamp() == pytest.approx(1_900_000_000.0)
        store.upsert_trial(job_id, 0, value=0.5, last_step=20)
        t = store.upsert_trial(job_id, 0, value=None, state="completed", finished_at=1_900_000_030.0)
        assert (t.state, t.value, t.last_step, t.params) == ("completed", 0.5, 20, {"optim/lr": 0.1})
        store.upsert_trial(job_id, 1, state="running", params={})
        job = store.get_job(None, job_id)
        assert job.trials_done == 1
        with pytest.raises(JobStateConflict):
            store.upsert_trial(job_id, 0, state="running")  # a finished result is final
        with pytest.raises(TypeError):
            store.upsert_trial(job_id, 0, colour="red")

    def test_list_and_get_trials(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        for n, state in enumerate(["completed", "failed", "completed", "pruned"]):
            store.upsert_trial(job_id, n, state=state, params={"n": n})
        page, total = store.list_trials("acme", job_id, limit=2, offset=1)
        assert total == 4 and [t.number for t in page] == [1, 2]
        done, n_done = store.list_trials("acme", job_id, state="completed")
        assert n_done == 2 and {t.number for t in done} == {0, 2}
        assert store.get_trial("acme", job_id, 3).state == "pruned"
        with pytest.raises(TrialNotFound):
            store.get_trial("acme", job_id, 99)

    def test_record_trial_finished_sets_best(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="completed", value=0.8)
        store.record_trial_finished(job_id, best_value=0.8, best_params={"a": 1.0})
        store.update_progress(job_id, trials_total=40)
        job = store.get_job(None, job_id)
        assert (job.best_value, job.best_params, job.trials_done, job.trials_total) == (
            0.8,
            {"a": 1.0},
            1,
            40,
        )

    def test_prepare_resume_interrupts_running_trials(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="completed", value=1.0)
        store.upsert_trial(job_id, 1, state="running")
        store.upsert_trial(job_id, 2, state="running")
        assert store.prepare_resume(job_id) == 2
        states = {t.number: t.state for t in store.list_trials(None, job_id)[0]}
        assert states == {0: "completed", 1: "interrupted", 2: "interrupted"}

    # Retries ----------------------------------------------------------------------------------------------
    def test_retry_failed_trial_of_running_job(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 3, state="failed", params={"optim/lr": 0.3})
        before = store.get_job(None, job_id)
        job = store.retry_trial("acme", job_id, 3)
        assert job.state == "running"
        assert job.extra_trials == 1 and job.trials_total == before.trials_total + 1
        with pytest.raises(JobStateConflict):  # one pending retry per trial
            store.retry_trial("acme", job_id, 3)
        assert store.take_retry_requests(job_id) == [{"optim/lr": 0.3}]
        assert store.take_retry_requests(job_id) == []

    def test_retry_requeues_a_finished_job(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="pruned", params={"p": 1})
        store.mark_succeeded(job_id, {})
        job = store.retry_trial("acme", job_id, 0)
        assert job.state == "queued" and len(job.retry_requests) == 1

    def test_retry_refuses_completed_trials_and_cancelled_jobs(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="completed", value=1.0)
        store.upsert_trial(job_id, 1, state="failed")
        with pytest.raises(JobStateConflict) as e:
            store.retry_trial("acme", job_id, 0)
        assert e.value.field == "number"
        with pytest.raises(TrialNotFound):
            store.retry_trial("acme", job_id, 7)
        store.mark_cancelled(job_id)
        with pytest.raises(JobStateConflict):
            store.retry_trial("acme", job_id, 1)
        assert store.get_job(None, job_id).retry_requests == []

    def test_non_finite_and_numpy_numbers_are_stored_as_json(self, store: JobStore) -> None:
        import numpy as np

        job_id = run_to(store, "running")
        store.upsert_trial(job_id, 0, state="completed", value=float("nan"), params={"w": np.float32(0.5)})
        results = {
            "best_value": float("nan"),
            "results": [{"ood_test/accuracy": float("inf"), "n": np.int64(3)}],
        }
        job = store.mark_succeeded(job_id, results)
        assert job.results == {"best_value": None, "results": [{"ood_test/accuracy": None, "n": 3}]}
        assert job.best_value is None
        trial = store.get_trial(None, job_id, 0)
        assert trial.value is None and trial.params == {"w": 0.5}

    # Events -----------------------------------------------------------------------------------------------
    def test_events_are_ordered_and_pollable(self, store: JobStore) -> None:
        job_id = run_to(store, "queued")
        for i in range(3):
            store.add_event(job_id, "stage:search", f"step {i}", {"i": i})
        events, total = store.list_events("acme", job_id)
        assert total == 4 and [e.kind for e in events] == ["created"] + ["stage:search"] * 3
        newer, n = store.list_events("acme", job_id, after_id=events[1].id)
        assert n == 2 and [e.data for e in newer] == [{"i": 1}, {"i": 2}]

    def test_handles_are_kept(self, store: JobStore) -> None:
        job_id = run_to(store, "running")
        store.set_handles(job_id, experiment_id="7", parent_run_id="abc", study_name="autoft-x")
        store.set_handles(job_id, experiment_id=None, parent_run_id=None, study_name=None)  # keeps them
        job = store.get_job(None, job_id)
        assert (job.mlflow_experiment_id, job.mlflow_parent_run_id, job.optuna_study_name) == (
            "7",
            "abc",
            "autoft-x",
        )

    # API keys ---------------------------------------------------------------------------------------------
    def test_api_key_round_trip_stores_only_a_hash(self, store: JobStore) -> None:
        key, record = store.create_api_key("acme", "ci")
        assert key.startswith(f"aft_{record.prefix}_") and store.authenticate(key) == "acme"
        with store.db.session() as s:
            row = s.scalars(select(ApiKey)).one()
            stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert not any(key in v or key.split("_", 2)[2] in v for v in stored)

    def test_bad_or_revoked_keys_are_unauthorized(self, store: JobStore) -> None:
        key, record = store.create_api_key("acme", "ci")
        tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
        for bad in (tampered, "aft_000000000000_" + "x" * 43, "nonsense", ""):
            with pytest.raises(Unauthorized):
                store.authenticate(bad)
        store.revoke_api_key(record.prefix)
        with pytest.raises(Unauthorized):
            store.authenticate(key)
        with pytest.raises(InvalidSpec):
            store.create_api_key("bad tenant!", "x")

    # Metrics ----------------------------------------------------------------------------------------------
    def test_counts_and_histograms(self, store: JobStore, clock: FakeClock) -> None:
        job_id = run_to(store, "running")  # claimed right after creation: queue wait ~0 s
        run_to(store, "queued")
        t0 = clock.t
        for n, secs in enumerate([2.0, 20.0, 200.0]):
            store.upsert_trial(
                job_id, n, state="completed", started_at=t0, finished_at=t0 + timedelta(seconds=secs)
            )
        store.upsert_trial(job_id, 3, state="running", started_at=t0)
        assert store.count_jobs_by_state() == {
            "queued": 1,
            "running": 1,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
        }
        trials = store.count_trials_by_state()
        assert trials["completed"] == 3 and trials["running"] == 1 and trials["pruned"] == 0
        h = store.trial_duration_histogram(buckets=(1, 10, 100, 1000))
        assert h.count == 3 and h.total == pytest.approx(222.0, abs=1e-3)
        assert [n for _, n in h.buckets] == [0, 1, 2, 3, 3]
        wait = store.queue_wait_histogram(buckets=(1,))
        assert wait.count == 1 and wait.buckets[0] == (1, 1)
        assert t0.tzinfo == UTC
