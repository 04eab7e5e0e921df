"""What runs inside a trial: a short fine-tune from the pretrained weights, scored on OOD validation.

The Ray Tune function trainables receive a validated :class:`~workers.contexts.TrialContext` (never the
environment) plus the sampled config (read by :class:`~workers.trial_config.TrialConfig`). A trial reports
after every ``eval_every`` inner steps, so an ASHA scheduler sees each rung; the reported ``step`` is the
scheduler's time attribute.

Two trainables run the same :func:`trial_body`:

- :func:`relay_trial` (the default): the Tune trial only relays. The driver began the trial on a resident
  worker leased from the job's :class:`~workers.residents.ResidentPool` as the searcher suggested it; the
  relay forwards the reports the worker streams back; the worker
  process, its imports, the loaded task and the warmed-up model outlive the trial and the job. This module
  imports neither torch nor the training code, so the Tune trial's own process starts in about a second.
- :func:`autoft_trial`: the trial trains in its own Tune actor process (resident workers turned off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.contexts import TrialContext
from workers.trial_config import START_RESULT_KEY, flatten_config

__all__ = ["TrialContext", "TrialStopped", "autoft_trial", "flatten_config", "relay_trial", "trial_body"]

Report = Callable[[dict[str, Any]], None]


class TrialStopped(Exception):
    """Raised into a trial's training when its scheduler (or a cancel) stopped it."""


def trial_body(
    config: dict[str, Any],
    ctx: TrialContext,
    report: Report,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Train one AutoFT trial and ``report`` each evaluation (``step`` included).

    With ``ctx.score_start`` the first report also carries the starting model's scores (computed once per
    process and task, :func:`~workers.prepared.start_scores`). ``stopped`` is asked after each evaluation:
    ``True`` ends the run with :class:`TrialStopped` before another step is trained."""
    from workers.autoft import run_objective
    from workers.prepared import start_scores
    from workers.trial_config import TrialConfig

    accel, prepared = ctx.start()
    start = start_scores(prepared, accel, ctx.metrics) if ctx.score_start else None

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        nonlocal start
        extra = {START_RESULT_KEY: start} if start is not None else {}
        start = None
        report({**metrics, **extra, "step": step})
        if stopped():
            raise TrialStopped

    run_objective(
        prepared, TrialConfig.from_flat(config), ctx.budget(),
        accel=accel, on_eval=on_eval, reuse_model=True, final_eval=False,
    )  # fmt: skip


def autoft_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: the trial trains in this (Tune actor) process."""
    from ray import tune

    trial_body(config, ctx, tune.report)


def relay_trial(
    config: dict[str, Any], ctx: TrialContext, pool: Any, lease_prefix: str, shape: tuple[float, float]
) -> None:
    """Ray Tune function trainable: forward the reports of the trial's run on a resident worker of
    ``shape`` (CPUs, GPUs) leased from ``pool`` (an actor handle of
    :class:`~workers.residents.ResidentPool`); the driver began that run as the trial was suggested
    (:meth:`~workers.residents.ResidentPool.begin`), else attaching starts it.

    The worker keeps training while Tune takes a report. The lease is ``<lease_prefix><trial id>``; the
    driver releases it when Tune ends the trial however it ends (an early stop included, when no code after
    the last report runs here), which also stops the worker's run of it."""
    import ray
    from ray import tune

    lease = f"{lease_prefix}{tune.get_context().get_trial_id()}"
    try:
        ray.get(pool.attach.remote(lease, shape, config, ctx))
        while refs := ray.get(pool.next.remote(lease)):
            tune.report(ray.get(refs[0]))
    except ray.exceptions.RayActorError:
        pool.release.remote(lease, broken=True)  # the worker died: the pool replaces it; Tune retries
        raise
    pool.release.remote(lease)
