"""Resident workers on a real local Ray runtime: leases, reuse across leases and jobs, early stop on release,
a dead worker replaced, idle workers ended, another shape making room; and jobs with them turned off."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoft_service.engine import Engine
from autoft_service.engine.dispatch import resident_pool, start_resident_workers
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from tests.conftest import FAST_TASK_PARAMS, LEAN_FINAL, small_spec
from workers.contexts import TrialContext

pytestmark = pytest.mark.integration

CONFIG = {"loss/ce/weight": 1.0, "optim/lr": 1e-3, "optim/weight_decay": 0.0, "train/seed": 0}


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    yield
    ray.shutdown()


def _ctx(task_cache: Path, steps: int = 6) -> TrialContext:
    return TrialContext(
        task_name="digits-shift", task_params=dict(FAST_TASK_PARAMS), cache_dir=str(task_cache),
        inner_steps=steps, eval_every=2, batch_size=16, metrics=("accuracy",),
    )  # fmt: skip


@pytest.fixture
def make_pool(ray_runtime: None) -> Iterator[Any]:
    """Private pools, ended after the test (their workers end with them and give their CPUs back)."""
    import ray

    from workers.residents import ResidentPool

    pools: list[Any] = []

    def make(idle_s: float = 600.0) -> Any:
        pools.append(ResidentPool.remote(idle_s))  # type: ignore[attr-defined]
        return pools[-1]

    yield make
    for pool in pools:
        ray.kill(pool)
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)


def test_a_worker_serves_lease_after_lease_and_streams_each_report(make_pool: Any, task_cache: Path) -> None:
    import ray

    pool = make_pool()
    pids, reports = set(), []
    for i in range(3):
        worker, token = ray.get(pool.acquire.remote(f"job/t{i}", (1.0, 0.0)))
        pids.add(ray.get(worker.ready.remote()))
        reports.append([ray.get(r) for r in worker.trial.remote(token, CONFIG, _ctx(task_cache))])
        ray.get(pool.release.remote(f"job/t{i}"))
    assert len(pids) == 1 and ray.get(pool.stats.remote())["created"] == 1  # one process for all three
    assert [[r["step"] for r in rs] for rs in reports] == [[2, 4, 6]] * 3
    assert reports[0] == reports[1] == reports[2] or all(  # same config and seed: the same scores
        {k: v for k, v in a.items() if not k.startswith("perf/")}
        == {k: v for k, v in b.items() if not k.startswith("perf/")}
        for a, b in zip(reports[0], reports[2], strict=True)
    )


def _read(pool: Any, lease: str) -> list[dict[str, Any]]:
    """What a relay forwards: the lease's run's reports, read from the pool until it ends."""
    import ray

    out = []
    while refs := ray.get(pool.next.remote(lease), timeout=120):
        out.append(ray.get(refs[0]))
    return out


def test_a_begun_trial_trains_before_its_relay_attaches_and_a_retry_runs_it_again(
    make_pool: Any, task_cache: Path
) -> None:
    import ray

    pool, ctx, shape = make_pool(), _ctx(task_cache), (1.0, 0.0)
    ray.get(pool.begin.remote("job/t0", shape, CONFIG, ctx))  # the driver, as the searcher suggests it
    ray.get(pool.begin.remote("job/t0", shape, CONFIG, ctx))  # told twice: still one run
    deadline = time.time() + 60
    while ray.get(pool.stats.remote())["busy"] == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert ray.get(pool.stats.remote())["leases"] == ["job/t0"]  # leased and running, no relay yet
    ray.get(pool.attach.remote("job/t0", shape, CONFIG, ctx))
    assert [r["step"] for r in _read(pool, "job/t0")] == [2, 4, 6]
    # the relay that read it died; Tune's retry attaches again: the trial runs again from its start
    ray.get(pool.attach.remote("job/t0", shape, CONFIG, ctx))
    assert [r["step"] for r in _read(pool, "job/t0")] == [2, 4, 6]
    ray.get(pool.release.remote("job/t0"))
    assert _read(pool, "job/t0") == []  # a released lease has nothing more to read
    # a relay with nothing begun (resident pool restarted, say) starts the run itself
    ray.get(pool.attach.remote("job/t1", shape, CONFIG, ctx))
    assert [r["step"] for r in _read(pool, "job/t1")] == [2, 4, 6]
    ray.get(pool.release.remote("job/t1"))
    stats = ray.get(pool.stats.remote())
    assert stats["created"] == 1 and stats["leases"] == stats["runs"] == [] and stats["busy"] == 0


def test_ending_a_search_ends_the_trials_it_began_still_waiting_for_a_worker(
    make_pool: Any, task_cache: Path
) -> None:
    import ray

    pool, ctx, shape = make_pool(), _ctx(task_cache, steps=4000), (1.0, 0.0)
    for i in range(3):  # two CPUs: the third waits for a worker
        ray.get(pool.begin.remote(f"job/t{i}", shape, CONFIG, ctx))
    deadline = time.time() + 60
    while ray.get(pool.stats.remote())["busy"] < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert ray.get(pool.stats.remote())["runs"] == ["job/t0", "job/t1", "job/t2"]
    assert ray.get(pool.release_all.remote("job/")) == 3
    deadline = time.time() + 60
    while ray.get(pool.stats.remote())["busy"] and time.time() < deadline:
        time.sleep(0.2)
    stats = ray.get(pool.stats.remote())  # the waiting one did not take a freed worker afterwards
    assert stats["busy"] == 0 and stats["leases"] == stats["runs"] == [] and stats["workers"] == 2


def test_releasing_a_lease_stops_its_run_and_a_busy_pool_waits(make_pool: Any, task_cache: Path) -> None:
    import ray

    pool = make_pool()
    held = [ray.get(pool.acquire.remote(f"job/t{i}", (1.0, 0.0))) for i in range(2)]  # both CPUs
    waiting = pool.acquire.remote("job/t2", (1.0, 0.0))
    time.sleep(1.0)
    assert ray.wait([waiting], timeout=0)[0] == []  # no third worker fits: the lease waits
    worker, token = held[0]
    stream = worker.trial.remote(token, CONFIG, _ctx(task_cache, steps=4000))
    first = ray.get(next(stream))
    ray.get(pool.release.remote("job/t0"))  # the scheduler stopped the trial: end its lease
    rest = [ray.get(r) for r in stream]
    assert first["step"] == 2 and len(rest) < 20  # stopped at an evaluation, far from step 4000
    got, _ = ray.get(waiting, timeout=60)
    assert ray.get(got.ready.remote()) == ray.get(worker.ready.remote())  # the freed worker, reused
    assert ray.get(pool.stats.remote())["created"] == 2


def test_a_dead_worker_is_replaced_and_idle_workers_end(make_pool: Any, task_cache: Path) -> None:
    import ray

    pool = make_pool(idle_s=2.0)
    worker, _ = ray.get(pool.acquire.remote("job/a", (1.0, 0.0)))
    pid = ray.get(worker.ready.remote())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    ray.get(pool.release.remote("job/a", broken=True))
    again, _ = ray.get(pool.acquire.remote("job/b", (1.0, 0.0)))
    assert ray.get(again.ready.remote()) != pid
    ray.get(pool.release.remote("job/b"))
    deadline = time.time() + 30
    while ray.get(pool.stats.remote())["workers"] and time.time() < deadline:
        time.sleep(0.5)
    assert ray.get(pool.stats.remote())["workers"] == 0  # idle past idle_s: ended, its CPU given back


def test_another_shape_evicts_idle_workers_and_functions_run_on_workers(make_pool: Any) -> None:
    import ray

    pool = make_pool()
    ray.get([pool.acquire.remote(f"job/one{i}", (1.0, 0.0)) for i in range(2)])  # two 1-CPU workers
    ray.get([pool.release.remote(f"job/one{i}") for i in range(2)])
    (ref,) = ray.get(pool.run.remote("job/two", (2.0, 0.0), [ray.put((os.getpid, (), {}))]))  # both CPUs
    assert ray.get(ref) != os.getpid()
    stats = ray.get(pool.stats.remote())
    assert stats["workers"] == 1 and stats["created"] == 3 and stats["leases"] == []


def _spec(name: str, **budget: Any) -> Any:
    return parse_spec(small_spec(
        name=name,
        budget={**small_spec()["budget"], "trials": 3, "inner_steps": 20, "early_stopping": {"type": "none"},
                **budget},
        final={**LEAN_FINAL, "steps": 3},
    ))  # fmt: skip


def test_jobs_share_the_resident_workers(ray_runtime: None, tmp_path: Path, task_cache: Path) -> None:
    import ray

    settings = Settings(data_dir=tmp_path / "data", task_cache_dir=task_cache, ray_num_cpus=2)
    assert start_resident_workers(settings) == 2
    pool = resident_pool(settings)
    before = ray.get(pool.stats.remote())["created"]
    engine = Engine(settings)
    first = engine.run(_spec("share-1", max_concurrent=2), job_id="share-1")
    second = engine.run(_spec("share-2", max_concurrent=2), job_id="share-2")
    stats = ray.get(pool.stats.remote())
    assert stats["created"] == before and stats["workers"] == 2 and stats["leases"] == []
    assert first.trials.get("complete") == second.trials.get("complete") == 3
    assert {r["method"] for r in second.results} >= {"autoft", "lp"}  # the final stage ran on them too
    ray.kill(pool)  # the pool gone (its workers end with it): the next job gets a new one
    fresh = resident_pool(settings)
    assert ray.get(fresh.stats.remote())["workers"] == 0


def test_jobs_run_without_resident_workers(ray_runtime: None, tmp_path: Path, task_cache: Path) -> None:
    """Last in this module: a fresh runtime, since the driver's pool of the test above holds both CPUs."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", task_cache_dir=task_cache, ray_num_cpus=2,
                        resident_workers=False)  # fmt: skip
    result = Engine(settings).run(_spec("no-residents", max_concurrent=2), job_id="no-residents")
    assert result.trials.get("complete") == 3
    assert {r["method"] for r in result.results} >= {"autoft", "lp"}
    pool = resident_pool(settings)  # the driver's pool: never asked for a worker
    assert ray.get(pool.stats.remote())["created"] == 0
