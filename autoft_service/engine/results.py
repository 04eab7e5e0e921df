"""Pure helpers that turn a finished study and the final stage's outcomes into the job's results."""

from __future__ import annotations

from typing import Any

import optuna

from autoft_service.engine.events import TrialEvent
from autoft_service.search.space import full_params
from autoft_service.spec import JobSpec


def pareto_front(spec: JobSpec, trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    """Non-dominated trials over the job's objectives (all objectives share ``objective.mode``)."""
    if not spec.objective.id_val_objective:
        return []
    sign = 1.0 if spec.objective.mode == "max" else -1.0
    pts = [(t, [sign * v for v in t.values]) for t in trials]
    front = [
        t
        for t, a in pts
        if not any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for _, b in pts)
    ]
    return [
        {"trial": t.number, "values": dict(zip(spec.objective.metrics, t.values, strict=True))}
        for t in sorted(front, key=lambda t: t.number)
    ]


#: Optuna trial state -> the engine's trial state.
STATE_NAMES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


def finished_events(spec: JobSpec, trials: list[optuna.trial.FrozenTrial]) -> list[TrialEvent]:
    """The study's finished trials as listener events (for ``JobListener.reconcile``)."""
    return [
        TrialEvent(
            number=t.number,
            tune_trial_id=str(t.user_attrs.get("tune_trial_id", "")),
            state=STATE_NAMES[t.state.name],
            params=full_params(spec.search, t.params),
            value=t.values[0] if t.values else None,
            last_step=max(t.intermediate_values, default=0),
        )
        for t in trials
    ]


def scalar_info(info: dict[str, Any]) -> dict[str, float]:
    """Numeric facts a method chose (e.g. ``wise_ft/alpha``) go into its results row."""
    return {k: float(v) for k, v in info.items() if "/" in k and isinstance(v, (int, float))}


def with_gap(row: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """Add ``gap/<m>`` = OOD val − mean OOD test: how much the OOD-val score overstates test robustness."""
    m = spec.objective.metric_name
    if f"ood_val/{m}" in row and f"ood_test/mean/{m}" in row:
        row[f"gap/{m}"] = row[f"ood_val/{m}"] - row[f"ood_test/mean/{m}"]
    return row


#: The rows the service may return as its model, in order of preference on ties (the WiSE-FT row first: at
#: equal OOD val it is the closest to the starting model).
FINAL_CANDIDATES = ("autoft_wise_ft", "autoft_soup", "autoft")


def select_final_row(outcomes: list[dict[str, Any]], metric: str, mode: str = "max") -> str:
    """The AutoFT row with the best ``metric`` (the objective, on OOD val): the model the job registers.

    Baselines never compete (they are the comparison); ties go to the earlier row of ``FINAL_CANDIDATES``."""
    sign = 1.0 if mode == "max" else -1.0
    rows = {o["method"]: o for o in outcomes}
    cands = [(name, rows[name]["metrics"].get(metric)) for name in FINAL_CANDIDATES if name in rows]
    cands = [(n, v) for n, v in cands if v is not None]
    if not cands:
        return "autoft"
    best = max(sign * v for _, v in cands)
    return next(n for n, v in cands if sign * v >= best - 1e-12)
