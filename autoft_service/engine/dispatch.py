"""Where a job's work runs: resident workers leased from the driver's pool, or a Ray task / Tune actor each.

:class:`JobWorkers` is the engine's one way to start worker-side work for a job: the search's trainable
(:meth:`JobWorkers.trainable`, with the Tune callback that ends each trial's lease) and every other run
(:meth:`JobWorkers.submit`: the final stage's rows, the soup, re-evaluations, the reference FT run, the start
scores). With ``settings.resident_workers`` (the default) all of it runs on
:class:`~workers.residents.ResidentWorker` processes that outlive the job; otherwise each piece starts a
process of its own, as Ray does by default.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from autoft_service.engine.events import JobListener
from autoft_service.engine.ray_runtime import ensure_ray
from autoft_service.errors import JobCancelled
from autoft_service.settings import Settings
from autoft_service.spec import JobSpec
from workers.contexts import TrialContext
from workers.trainable import autoft_trial, relay_trial

log = logging.getLogger(__name__)

#: The Ray name of the driver's resident pool (one per driver: named actors live in its namespace).
POOL_NAME = "autoft-resident-pool"
#: What a relaying Tune trial reserves: no CPU (its resident worker holds the trial's), a little memory.
RELAY_MEMORY = 64 * 2**20


#: The pool's handle per Ray driver job: Ray ends an actor once its owner holds no handle to it, named or not.
_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()


def resident_pool(settings: Settings) -> Any:
    """The driver's :class:`~workers.residents.ResidentPool` (started on first use)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from workers.residents import ResidentPool

    ensure_ray(settings)
    rc = ray.get_runtime_context()
    job = f"{rc.get_node_id()}/{rc.get_job_id()}"  # a restarted runtime has a new node id
    with _pools_lock:
        if job in _pools:
            try:
                ray.get(_pools[job].stats.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                log.warning("the resident pool is gone; starting a new one")
                del _pools[job]
        if job not in _pools:
            _pools.clear()  # handles of an earlier Ray runtime of this process
            # on the driver's own node: it lives and dies with the driver anyway, and a node Ray has not yet
            # noticed is gone (a killed runner's, in a cluster) must not be given the new driver's pool
            here = NodeAffinitySchedulingStrategy(node_id=rc.get_node_id(), soft=False)
            _pools[job] = ResidentPool.options(  # type: ignore[attr-defined]
                name=POOL_NAME, get_if_exists=True, scheduling_strategy=here
            ).remote(settings.resident_idle_seconds)
        return _pools[job]


def start_resident_workers(
    settings: Settings, cpus: float = 1.0, gpus: float = 0.0, *, wait: bool = True
) -> int | None:
    """Start as many resident workers of one shape as the Ray runtime holds, so the first job after the
    service starts finds them up (each imports torch and the training code as it starts). With ``wait``
    return how many are up; without, return at once (``None``)."""
    import ray

    if not settings.resident_workers:
        return 0
    ref = resident_pool(settings).prestart.remote((cpus, gpus))
    return int(ray.get(ref)) if wait else None


@dataclass
class Pending:
    """One submitted run: the pool's reference to the result's reference, or a Ray task's result."""

    ref: Any
    resident: bool
    retry: Callable[[], Pending] | None = None

    def get(self) -> Any:
        import ray

        try:
            return ray.get(ray.get(self.ref)[0]) if self.resident else ray.get(self.ref)
        except ray.exceptions.RayActorError:
            if self.retry is None:
                raise
            return self.retry().get()  # the worker died under it: once more, on another


@dataclass
class JobWorkers:
    """A job's handle on its workers (see the module docstring)."""

    settings: Settings
    spec: JobSpec
    job_id: str
    #: The task's revision for this job (:meth:`~workers.tasks.base.Task.revision`, else the job id).
    revision: str = ""
    resident: bool = field(init=False)
    _names: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self.resident = self.settings.resident_workers
        self.prefix = f"{self.job_id}/"
        r = self.spec.resources
        self.shape = (float(r.cpus_per_trial), float(r.gpus_per_trial))
        self.pool = resident_pool(self.settings) if self.resident else None

    def warm(self, ctx: TrialContext) -> None:
        """Have the pool load and warm up the job's task on as many workers as the search runs at once,
        while the driver sets up the job (returns at once)."""
        if self.pool is not None:
            self.pool.warm.remote(self.prefix, self.shape, ctx, self.spec.budget.max_concurrent)

    def submit(
        self, label: str, fn: Callable[..., Any], /, *args: Any, retries: int = 0, **kwargs: Any
    ) -> Pending:
        """Start ``fn(*args, **kwargs)`` on a worker (``label`` names its lease; ``retries``: reruns when the
        worker dies under it)."""
        import ray

        if self.pool is None:
            remote = ray.remote(fn).options(num_cpus=self.shape[0], num_gpus=self.shape[1], max_retries=retries)
            return Pending(remote.remote(*args, **kwargs), resident=False)
        lease = f"{self.prefix}{label}-{next(self._names)}"
        ref = self.pool.run.remote(lease, self.shape, [ray.put((fn, args, kwargs))])
        again = (lambda: self.submit(label, fn, *args, retries=retries - 1, **kwargs)) if retries > 0 else None
        return Pending(ref, resident=True, retry=again)

    def run(self, label: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit` and wait for the result."""
        return self.submit(label, fn, *args, **kwargs).get()

    def wait(self, pending: Sequence[Pending], listener: JobListener) -> None:
        """Wait for every run; on a cancel request stop them all and raise ``JobCancelled``."""
        import ray

        refs = [p.ref for p in pending]
        while refs:
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            if refs and listener.should_cancel():
                if self.pool is not None:
                    ray.get(self.pool.abort.remote(self.prefix))
                else:
                    for r in refs:
                        ray.cancel(r, force=True)
                raise JobCancelled("job cancelled during the final stage")

    def trainable(self, ctx: TrialContext) -> Any:
        """The search's Tune trainable with its resources."""
        if self.pool is None:
            return tune.with_resources(
                tune.with_parameters(autoft_trial, ctx=ctx), {"cpu": self.shape[0], "gpu": self.shape[1]}
            )
        relay = tune.with_parameters(relay_trial, ctx=ctx, pool=self.pool, lease_prefix=self.prefix,
                                     shape=self.shape)  # fmt: skip
        return tune.with_resources(relay, {"cpu": 0, "memory": RELAY_MEMORY})

    def trial_starter(self, ctx: TrialContext) -> Callable[[str, dict[str, Any]], None] | None:
        """What the searcher calls with each trial it suggests: begin the trial's run on a resident worker
        now, while Tune starts the relay (``None`` without resident workers)."""
        if self.pool is None:
            return None
        pool, prefix, shape = self.pool, self.prefix, self.shape

        def begin(trial_id: str, config: dict[str, Any]) -> None:
            pool.begin.remote(f"{prefix}{trial_id}", shape, config, ctx)

        return begin

    def callbacks(self) -> list[tune.Callback]:
        """Tune callbacks the search needs: ending each relayed trial's lease however the trial ends."""
        return [] if self.pool is None else [_EndLeases(self.pool, self.prefix)]

    def release_all(self) -> None:
        """End every lease of the job still held (after its search, whatever stopped it)."""
        import ray

        if self.pool is not None:
            try:
                ray.get(self.pool.release_all.remote(self.prefix))
            except ray.exceptions.RayActorError as e:  # its workers went with it: nothing is left held
                log.warning("the resident pool is gone: %s", e)


class _EndLeases(tune.Callback):
    """Ends a relayed trial's lease when Tune ends the trial: completed, early-stopped (the relay's code
    after its last report never runs then), errored or about to be retried."""

    def __init__(self, pool: Any, prefix: str) -> None:
        self.pool, self.prefix = pool, prefix

    def _end(self, trial: Any) -> None:
        self.pool.release.remote(f"{self.prefix}{trial.trial_id}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)
