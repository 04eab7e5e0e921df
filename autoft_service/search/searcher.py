"""OptunaSearch with honest trial states and a persistent, resumable study."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from workers.trial_config import DISTANCE_KEY

log = logging.getLogger(__name__)

INTERRUPTED_ATTR = "autoft_interrupted"
WARM_START_ATTR = "autoft_warm_start_from"
TUNE_ID_ATTR = "tune_trial_id"
METRICS_ATTR = "metrics"


class IdValDropConstraint:
    """Optuna constraint: feasible (≤ 0) when ``id_val`` ≥ reference − max_drop (picklable)."""

    def __init__(self, key: str, reference: float, max_drop: float) -> None:
        self.key, self.reference, self.max_drop = key, reference, max_drop

    def __call__(self, trial: optuna.trial.FrozenTrial) -> list[float]:
        value = trial.user_attrs.get(METRICS_ATTR, {}).get(self.key)
        return [1.0 if value is None else self.reference - self.max_drop - float(value)]


class AutoFTOptunaSearch(OptunaSearch):
    """Records trials that the scheduler stopped before ``full_steps`` as PRUNED, not COMPLETE.

    Plain OptunaSearch tells Optuna that an ASHA-stopped trial is COMPLETE with its last (early) value, so
    TPE treats a half-trained score as final. Here such trials are PRUNED (Optuna keeps their intermediate
    values, which TPE uses as pruned observations).
    """

    def __init__(
        self,
        *args: Any,
        full_steps: int,
        step_key: str = "step",
        stop_check: Callable[[], bool] | None = None,
        on_suggest: Callable[[str, dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``stop_check``: asked before each suggestion, ``True`` ends the search (a cancelled job);
        ``on_suggest(trial_id, config)``: told each suggested trial (the driver begins its run on a
        resident worker at once). Both live in the driver only."""
        super().__init__(*args, **kwargs)
        self.full_steps = full_steps
        self.step_key = step_key
        self.stop_check = _DriverOnly(stop_check)
        self.on_suggest = _DriverOnly(on_suggest)

    def suggest(self, trial_id: str) -> dict | None:
        # asked before every new trial: once the job is cancelled no trial starts (Tune's stopper is only
        # consulted after the trial queue was filled in the same step)
        if self.stop_check():
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's own sentinel, typed as str
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self.on_suggest(trial_id, config)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr(TUNE_ID_ATTR, trial_id)
        return config

    def optuna_number(self, trial_id: str) -> int | None:
        t = self._ot_trials.get(trial_id)
        return None if t is None else t.number

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if result and ot_trial is not None and trial_id not in self._completed_trials:
            # validation metrics travel with the trial: constraints and reports read them from Optuna
            metrics = {
                k: float(v)
                for k, v in result.items()
                if k.startswith(("id_val/", "ood_val/")) or k == DISTANCE_KEY
            }
            ot_trial.set_user_attr(METRICS_ATTR, metrics)
        stopped_early = (
            not error
            and result is not None
            and result.get(self.step_key, self.full_steps) < self.full_steps
            and trial_id not in self._completed_trials
            and trial_id in self._ot_trials
        )
        study = self._ot_study
        if not stopped_early or study is None:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        try:
            study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        except Exception as exc:  # e.g. the study row vanished; never kill the search for bookkeeping
            log.warning("could not record pruned trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


class _DriverOnly:
    """A callable that lives in the driver only: Tune pickles the searcher into its experiment state (a
    copy restored from it calls nothing and answers ``False``)."""

    def __init__(self, fn: Callable[..., Any] | None) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn is not None and self.fn(*args)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": None}


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a crashed driver as FAIL (interrupted); return how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED_ATTR, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget: complete, pruned, or failed for a reason other than a crash."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get(WARM_START_ATTR)
        and (
            t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))
        )
    ]


def own_completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials run by this job (warm-start copies excluded), best first is up to the caller."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and not t.user_attrs.get(WARM_START_ATTR)
    ]


def warm_start(
    study: optuna.Study,
    source: optuna.Study,
    source_job: str,
    distributions: dict[str, optuna.distributions.BaseDistribution],
) -> int:
    """Copy ``source``'s completed trials into ``study`` (once) where they fit its space; return how many.

    A trial fits when every parameter the new space searches is present with the same distribution. Copies
    carry ``WARM_START_ATTR`` so they inform the sampler but never count in the budget or win the search.
    """
    if any(t.user_attrs.get(WARM_START_ATTR) == source_job for t in study.get_trials(deepcopy=False)):
        return 0
    copied = 0
    for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.values is None or any(t.distributions.get(k) != d for k, d in distributions.items()):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params={k: t.params[k] for k in distributions},
                distributions=distributions,
                values=t.values,
                user_attrs={WARM_START_ATTR: source_job},
            )
        )
        copied += 1
    return copied
