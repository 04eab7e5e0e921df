"""Resident workers: long-lived Ray actor processes that run every trial and final-stage run of every job.

A Tune trial, a final-stage retrain and a baseline each used to start a Ray worker process of its own that
imported torch, loaded the task and warmed up its first steps: seconds per process, paid again by every
job, while the CPUs it was given sat idle. A :class:`ResidentWorker` pays that once. It holds the job's
resources (``num_cpus`` / ``num_gpus`` of one trial), keeps its imports, loaded tasks
(:func:`~workers.prepared.prepared_task`, reloaded when a task's revision changes) and resident model, and
runs whatever it is leased for: a search trial (:meth:`ResidentWorker.trial`, its reports streamed back to
the Tune trial that relays them, :func:`~workers.trainable.relay_trial`) or a final-stage function
(:meth:`ResidentWorker.call`).

The :class:`ResidentPool` (one async actor per driver) owns the workers and hands them out by *lease*: a
string naming one piece of work (``<job>/<trial>``). It creates a worker when none of the wanted shape is
idle and the cluster's resources allow one more, evicts idle workers of another shape to make room, waits
otherwise, and ends workers idle for ``idle_s`` seconds so their resources return to the cluster. Releasing a
lease also stops the worker's run of it (an early-stopped or cancelled trial), at its next evaluation.

A search trial's run is begun by the driver the moment its searcher suggests it (:meth:`ResidentPool.begin`),
not when Tune's actor for the trial is up: the worker trains while that actor starts (about a second for
the first trial of a job) and while Tune hands it the trial. The relay then attaches
(:meth:`ResidentPool.attach`) and reads the run's reports as they come (:meth:`ResidentPool.next`); a relay
that finds no run begun, or one an earlier, dead relay of the trial read from (Tune retrying it), starts a
new run.

This module imports neither torch nor the training code at import time: the pool's process stays small.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray

from workers.contexts import TrialContext

#: (CPUs, GPUs) of one worker: what one trial of the job asks for.
Shape = tuple[float, float]


@ray.remote(concurrency_groups={"control": 1})  # type: ignore[call-overload]
class ResidentWorker:
    """One long-lived worker process; runs one lease at a time (``stop`` answers alongside)."""

    def __init__(self) -> None:
        import workers.methods  # noqa: F401 - torch and the training code, imported once as the worker starts

        #: Tokens told to stop, also before their run began (it then ends at once); the newest few only.
        self._stopped: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._warmed: set[int] = set()

    @ray.method(concurrency_group="control")
    def ready(self) -> int:
        """The process id, once the worker is up (answered while it runs a lease)."""
        return os.getpid()

    def warm(self, ctx: TrialContext) -> None:
        """Load the job's task and train two throwaway steps on it (once per loaded task), so the job's
        first trial runs at the pace of every later one; score the starting model when the job asks."""
        from workers.autoft import RunBudget, run_objective
        from workers.prepared import start_scores
        from workers.trial_config import TrialConfig

        accel, prepared = ctx.start()
        if ctx.score_start:
            start_scores(prepared, accel, ctx.metrics)
        if id(prepared) in self._warmed:
            return
        self._warmed.add(id(prepared))
        budget = RunBudget(2, ctx.batch_size, ctx.metrics)
        run_objective(prepared, TrialConfig({"ce": 1.0}, 1e-6, 0.0, 0), budget, accel=accel,
                      reuse_model=True, final_eval=False)  # fmt: skip

    def trial(self, token: str, config: dict[str, Any], ctx: TrialContext) -> Iterator[dict[str, Any]]:
        """Run one search trial (:func:`~workers.trainable.trial_body`), yielding each report as it is made:
        the training goes on in a thread of this process while the caller forwards the report. ``token``
        is the lease's (:meth:`ResidentPool.acquire`); the run ends early, without error, when
        :meth:`stop` is called with it."""
        from workers.trainable import TrialStopped, trial_body

        with self._lock:
            if token in self._stopped:
                return
        reports: queue.Queue[tuple[str, Any]] = queue.Queue()

        def stopped() -> bool:
            return token in self._stopped

        def run() -> None:
            try:
                trial_body(config, ctx, lambda r: reports.put(("report", r)), stopped)
                reports.put(("end", None))
            except TrialStopped:
                reports.put(("end", None))
            except BaseException as e:  # handed to the caller as the trial's error
                reports.put(("error", e))

        thread = threading.Thread(target=run, name=f"trial-{token}", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = reports.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                if not stopped():
                    yield value
        finally:
            thread.join()

    def call(self, payload: list[Any]) -> Any:
        """Run one worker function (a final-stage row, a reference run, the start scores) here;
        ``payload`` is ``[ref]``, a reference to ``(fn, args, kwargs)`` (see :meth:`ResidentPool.run`)."""
        fn, args, kwargs = ray.get(payload[0])
        return fn(*args, **kwargs)

    @ray.method(concurrency_group="control")
    def stop(self, token: str) -> None:
        """Stop this worker's run of the lease token ``token`` at its next evaluation, or at once if it has
        not begun (a token is used once: stopping an ended run changes nothing)."""
        with self._lock:
            self._stopped[token] = None
            while len(self._stopped) > 1024:
                self._stopped.popitem(last=False)


@dataclass
class _Run:
    """A search trial's run on its leased worker."""

    #: The worker's report stream (an ``ObjectRefGenerator``) once a worker is leased and the run is sent.
    stream: asyncio.Future[Any]
    #: A relay reads this run (a later relay of the same trial is a retry: it starts a new run).
    attached: bool = False


@dataclass
class _Entry:
    handle: Any
    shape: Shape
    lease: str | None = None
    #: The current lease's token: what the worker's run of it is called (a retried lease gets a new one).
    token: str = ""
    last_prefix: str = ""
    idle_since: float = 0.0


def _prefix(lease: str) -> str:
    return lease.rsplit("/", 1)[0] + "/"


@ray.remote(num_cpus=0)
class ResidentPool:
    """Hands out :class:`ResidentWorker` s by lease (see the module docstring)."""

    def __init__(self, idle_s: float = 600.0) -> None:
        self._idle_s = idle_s
        self._workers: list[_Entry] = []
        self._leases: dict[str, _Entry] = {}
        self._changed: asyncio.Condition | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tokens = itertools.count()
        self._runs: dict[str, _Run] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self.created = 0

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        return self._changed

    async def acquire(self, lease: str, shape: Shape) -> tuple[Any, str]:
        """A worker of ``shape`` for ``lease``, once it is up, and the token its run of the lease goes by;
        waits while every worker of that shape is leased and no other fits. A lease already held (a retry
        whose relay died) keeps its worker, whose orphaned run is stopped, under a new token."""
        cond = self._cond()
        async with cond:
            if lease in self._leases:
                held = self._leases[lease]
                held.handle.stop.remote(held.token)
            while lease not in self._leases:
                entry = self._idle(shape, _prefix(lease)) or self._create(shape)
                if entry is not None:
                    entry.lease = lease
                    self._leases[lease] = entry
                    break
                await cond.wait()
            entry = self._leases[lease]
            entry.token = f"{lease}#{next(self._tokens)}"
            token = entry.token
        try:
            await entry.handle.ready.remote()
        except ray.exceptions.RayActorError:
            await self._drop(entry)
            raise
        return entry.handle, token

    def begin(self, lease: str, shape: Shape, config: dict[str, Any], ctx: TrialContext) -> None:
        """Start the search trial ``lease`` (``config``, ``ctx``: see :meth:`ResidentWorker.trial`) on a
        worker of ``shape`` as soon as one is free, whether or not its relay is up yet; returns at once. A
        trial already begun is left as it is."""
        if lease not in self._runs:
            self._start(lease, shape, config, ctx)

    async def attach(self, lease: str, shape: Shape, config: dict[str, Any], ctx: TrialContext) -> None:
        """The relay of ``lease``: read the run :meth:`begin` started, or start one (none begun, or this is
        a retry of a trial whose earlier relay read it); returns once the run is sent to a worker."""
        run = self._runs.get(lease)
        if run is None or run.attached:
            run = self._start(lease, shape, config, ctx)
        run.attached = True
        await run.stream

    async def next(self, lease: str) -> list[Any]:
        """The run's next report, as ``[ref]`` (a reference, read by the relay from the worker), once the
        worker made it; ``[]`` when the run ended or its lease was released. A worker that died raises."""
        run = self._runs.get(lease)
        if run is None:
            return []
        stream = await run.stream
        try:
            return [await stream.__anext__()]
        except StopAsyncIteration:
            return []

    def _start(self, lease: str, shape: Shape, config: dict[str, Any], ctx: TrialContext) -> _Run:
        run = _Run(asyncio.get_running_loop().create_future())
        self._runs[lease] = run

        async def send() -> None:
            try:
                handle, token = await self.acquire(lease, shape)
            except BaseException as e:  # told to whoever attaches or reads
                run.stream.set_exception(e)
                run.stream.exception()  # read here too: a run nobody attached to is not an error to log
                return
            if self._runs.get(lease) is not run:  # released (or started again) while it waited for a worker
                if lease not in self._runs:
                    await self.release(lease)
                run.stream.set_exception(asyncio.CancelledError())
                run.stream.exception()
                return
            run.stream.set_result(handle.trial.remote(token, config, ctx))

        task = asyncio.get_running_loop().create_task(send())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return run

    async def release(self, lease: str, broken: bool = False) -> None:
        """End ``lease``: its worker stops running it and is free again (ended and replaced if
        ``broken``). Releasing a lease not held is a no-op."""
        self._runs.pop(lease, None)
        entry = self._leases.pop(lease, None)
        if entry is None:
            return
        entry.handle.stop.remote(entry.token)
        if broken or not await self._alive(entry):
            await self._drop(entry)
            return
        entry.lease, entry.last_prefix, entry.idle_since = None, _prefix(lease), time.monotonic()
        async with self._cond():
            self._cond().notify_all()

    async def release_all(self, prefix: str) -> int:
        """Release every lease starting with ``prefix`` (a job's, when its search or stage ends), begun
        trials still waiting for a worker included."""
        held = sorted({lease for lease in (*self._leases, *self._runs) if lease.startswith(prefix)})
        for lease in held:
            await self.release(lease)
        return len(held)

    async def abort(self, prefix: str) -> int:
        """End the workers running a lease that starts with ``prefix`` now (a cancelled job's final
        stage: a function call cannot be interrupted otherwise); the pool replaces them on demand."""
        held = {id(e): e for lease, e in self._leases.items() if lease.startswith(prefix)}
        for entry in held.values():
            await self._drop(entry)  # its leases go with it
        return len(held)

    async def run(self, lease: str, shape: Shape, payload: list[Any]) -> list[Any]:
        """Run a function on a worker leased for ``lease``; ``payload`` is ``[ref]``, a reference to
        ``(fn, args, kwargs)`` (put by the caller: neither the function, nor its tensors, nor its result ever
        pass through the pool, which so never imports torch). Return ``[ref]``, the result's reference."""
        handle, _ = await self.acquire(lease, shape)
        ref = handle.call.remote(payload)
        await asyncio.get_running_loop().run_in_executor(None, lambda: ray.wait([ref], fetch_local=False))
        await self.release(lease)
        return [ref]

    async def warm(self, lease_prefix: str, shape: Shape, ctx: TrialContext, n: int) -> int:
        """Have ``n`` workers of ``shape`` load and warm up ``ctx``'s task, creating them where the cluster
        has room, and every other idle worker of that shape too (it may serve the job's next run, or the
        next job's); busy workers are not waited for. The job's leases then prefer these workers."""
        cond = self._cond()
        picked: list[_Entry] = []
        async with cond:
            for i in range(len(self._workers) + n):
                entry = self._idle(shape, lease_prefix) or (self._create(shape) if i < n else None)
                if entry is None:
                    break
                entry.lease = "warm"
                picked.append(entry)
        for entry in picked:
            entry.handle.warm.remote(ctx)  # queued ahead of the job's first lease on this worker
            entry.lease, entry.last_prefix, entry.idle_since = None, lease_prefix, time.monotonic()
        async with cond:
            cond.notify_all()
        return len(picked)

    async def prestart(self, shape: Shape) -> int:
        """Start workers of ``shape`` until the cluster's resources hold no more; return how many are up."""
        async with self._cond():
            while self._create(shape) is not None:
                pass
        handles = [e.handle for e in self._workers if e.shape == shape]
        await asyncio.gather(*(h.ready.remote() for h in handles))
        return len(handles)

    def stats(self) -> dict[str, Any]:
        """Workers by state, and how many this pool has started."""
        busy = sum(e.lease is not None for e in self._workers)
        return {"workers": len(self._workers), "busy": busy, "idle": len(self._workers) - busy,
                "created": self.created, "leases": sorted(self._leases), "runs": sorted(self._runs)}  # fmt: skip

    # internals ----------------------------------------------------------------------------------------
    def _idle(self, shape: Shape, prefix: str) -> _Entry | None:
        idle = [e for e in self._workers if e.lease is None and e.shape == shape]
        if not idle:
            return None
        return max(idle, key=lambda e: (e.last_prefix == prefix, e.idle_since))

    def _create(self, shape: Shape) -> _Entry | None:
        """A new worker when the cluster's resources hold one more (evicting idle workers of other shapes
        first where needed), else ``None``."""
        total = ray.cluster_resources()
        cpus, gpus = shape

        def fits() -> bool:
            held_c = sum(e.shape[0] for e in self._workers)
            held_g = sum(e.shape[1] for e in self._workers)
            return held_c + cpus <= total.get("CPU", 0) + 1e-9 and held_g + gpus <= total.get("GPU", 0) + 1e-9

        while not fits():
            others = [e for e in self._workers if e.lease is None and e.shape != shape]
            if not others:
                return None
            self._end(min(others, key=lambda e: e.idle_since))
        handle = ResidentWorker.options(num_cpus=cpus, num_gpus=gpus).remote()  # type: ignore[attr-defined]
        entry = _Entry(handle, shape, idle_since=time.monotonic())
        self._workers.append(entry)
        self.created += 1
        return entry

    async def _alive(self, entry: _Entry) -> bool:
        try:
            await entry.handle.ready.remote()
        except ray.exceptions.RayActorError:
            return False
        return True

    def _end(self, entry: _Entry) -> None:
        """Forget a worker and its leases, and end its process."""
        if entry in self._workers:
            self._workers.remove(entry)
        for lease in [k for k, e in self._leases.items() if e is entry]:
            del self._leases[lease]
        ray.kill(entry.handle)

    async def _drop(self, entry: _Entry) -> None:
        self._end(entry)
        async with self._cond():
            self._cond().notify_all()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, min(60.0, self._idle_s / 4)))
            now = time.monotonic()
            for entry in [e for e in self._workers if e.lease is None and now - e.idle_since > self._idle_s]:
                self._end(entry)
