"""The AutoFT search space as a pure, cheap declaration: spec → Optuna define-by-run function.

Names: ``loss/<term>/weight``, ``optim/lr``, ``optim/weight_decay``, ``train/seed``. A fixed value is
returned as a constant, never suggested and then overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna

from autoft_service.spec import SamplerSpec, SearchSpec
from workers.trial_config import (
    LR_KEY,
    METHOD_KEY,
    PLAIN_ADAMW,
    SEED_KEY,
    WEIGHT_DECAY_KEY,
    loss_weight_key,
    method_param_key,
)

#: The plain AutoFT training method (AdamW on the searched objective) when the search also picks methods.
ADAMW = PLAIN_ADAMW


def searched_terms(search: SearchSpec) -> list[str]:
    return [t for t in search.loss_terms if t not in search.fixed_weights]


class DefineByRun:
    """``space(trial)``: suggests the searched dimensions and returns the fixed ones (picklable)."""

    def __init__(self, search: SearchSpec) -> None:
        self.search = search
        self.terms = searched_terms(search)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        search = self.search
        w_lo, w_hi = search.weight_range
        for t in self.terms:
            trial.suggest_float(loss_weight_key(t), w_lo, w_hi, log=True)
        if search.lr.relative_range is not None:
            lo, hi = search.lr.relative_range
            trial.suggest_float(LR_KEY, search.lr.base * lo, search.lr.base * hi, log=True)
        if not isinstance(search.weight_decay, (int, float)):
            trial.suggest_float(WEIGHT_DECAY_KEY, *search.weight_decay)
        if not isinstance(search.seed, int):
            trial.suggest_int(SEED_KEY, *search.seed)
        if search.methods:
            method = trial.suggest_categorical(METHOD_KEY, [ADAMW, *search.methods])
            for pname, r in method_space(method).items():
                key = method_param_key(method, pname)
                if r.integer:
                    trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
                else:
                    trial.suggest_float(key, r.low, r.high, log=r.log)
        return fixed_params(search)


def fixed_params(search: SearchSpec) -> dict[str, Any]:
    """The dimensions the spec fixes (never suggested): fixed loss weights, and the LR, weight decay and
    seed where the spec gives one value. The one place both the define-by-run function and
    :func:`full_params` take them from."""
    out: dict[str, Any] = {loss_weight_key(t): float(w) for t, w in search.fixed_weights.items()}
    if search.lr.relative_range is None:
        out[LR_KEY] = search.lr.base
    if isinstance(search.weight_decay, (int, float)):
        out[WEIGHT_DECAY_KEY] = float(search.weight_decay)
    if isinstance(search.seed, int):
        out[SEED_KEY] = search.seed
    return out


def method_space(name: str) -> dict[str, Any]:
    """A method's searchable hyperparameters (``SearchRange`` by name); plain AdamW has none."""
    if name == ADAMW:
        return {}
    from workers.ft_methods import create_method

    return create_method(name, {}).search_space()


def define_by_run(search: SearchSpec) -> DefineByRun:
    return DefineByRun(search)


def make_sampler(
    spec: SamplerSpec,
    constraints: Callable[[optuna.trial.FrozenTrial], Sequence[float]] | None = None,
    *,
    continue_after: int = 0,
) -> optuna.samplers.BaseSampler:
    """A seeded sampler. TPE uses the constant liar so parallel trials do not all pick the same point, and
    handles one or several objectives and (optionally) constraints.

    ``continue_after`` is how many trials the study already holds (a resumed or extended job). A sampler
    built again with the job's own seed would replay its random sequence from the start, so the first new
    trials would copy trials 0, 1, ... exactly; the seed is therefore derived from (seed, trials so far):
    a fresh job stays reproducible from its seed, and a continued one draws new points.
    """
    seed = continued_seed(spec.seed, continue_after)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=spec.multivariate,
        n_startup_trials=spec.n_startup_trials,
        constant_liar=True,
        constraints_func=constraints,
    )


def continued_seed(seed: int | None, trials_so_far: int) -> int | None:
    """The sampler seed for a study that already holds ``trials_so_far`` trials (the job seed at 0)."""
    if seed is None or trials_so_far <= 0:
        return seed
    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def full_params(search: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's (searched) params of a trial plus the fixed ones: the complete objective."""
    out = fixed_params(search)
    out.update(params)
    return out


def space_distributions(search: SearchSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distributions of the searched dimensions (by running the space on a scratch trial)."""
    trial = optuna.create_study().ask()
    DefineByRun(search)(trial)
    return dict(trial.distributions)
