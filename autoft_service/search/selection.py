"""Choosing the final objective among finished trials without chasing the noise of a small OOD val set.

An accuracy measured on ``n`` images has a binomial standard error ``sqrt(p (1 - p) / n)`` (about 3.5 points
at 150 images, p = 0.8): differences below it are noise. The ``one_se`` rule (the "one standard error rule"
of model selection, Hastie et al.) takes every trial whose score is within one standard error of the best and,
among those near-ties, prefers the trial whose weights moved least from the pretrained ones (the most
conservative fine-tune, the one LP-FT and WiSE-FT argue keeps robustness). ``best`` takes the raw maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

SelectionRule = Literal["one_se", "best"]
#: Metrics that are proportions of examples, for which the binomial standard error holds.
PROPORTION_METRICS = frozenset({"accuracy", "worst_group_accuracy"})


@dataclass(frozen=True)
class Candidate:
    """One trial as the rule sees it: its (mean) objective value and its distance from the start."""

    trial: int
    value: float
    distance: float | None = None


@dataclass(frozen=True)
class Selection:
    """The chosen trial, the best raw trial and why the one was preferred to the other."""

    chosen: int
    best: int
    chosen_value: float
    best_value: float
    standard_error: float | None
    near_ties: list[int]
    rule: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion ``p`` measured on ``n`` examples (0 for ``n <= 0``)."""
    if n <= 0:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n)


def select_trial(
    candidates: Sequence[Candidate],
    *,
    n: int,
    rule: SelectionRule = "one_se",
    maximize: bool = True,
    proportion: bool = True,
) -> Selection:
    """Apply ``rule`` to ``candidates`` (objective values measured on ``n`` examples).

    ``one_se`` needs a proportion to maximise (an accuracy); for any other objective it falls back to
    ``best``. Near-ties without a recorded distance rank after those with one; remaining ties go to the
    higher value, then to the lower trial number, so the rule is deterministic."""
    if not candidates:
        raise ValueError("no candidate trials to select from")
    sign = 1.0 if maximize else -1.0
    best = max(candidates, key=lambda c: (sign * c.value, -c.trial))
    if rule == "best" or not (maximize and proportion) or n <= 0:
        why = "rule 'best': the highest objective" if rule == "best" else (
            "rule 'one_se' needs an accuracy-like objective to maximise: the best trial is taken"
        )  # fmt: skip
        return Selection(best.trial, best.trial, best.value, best.value, None, [best.trial], rule, why)
    se = binomial_se(best.value, n)
    ties = [c for c in candidates if c.value >= best.value - se - 1e-12]
    chosen = min(
        ties,
        key=lambda c: (c.distance is None, c.distance or 0.0, -c.value, c.trial),
    )
    if chosen.trial == best.trial:
        reason = f"the best trial is also the closest to the start among the {len(ties)} within one SE"
    else:
        reason = (
            f"trial {chosen.trial} is within one standard error ({se:.4f}, n={n}) of the best "
            f"({best.value:.4f}) and moved least from the pretrained weights "
            f"(distance {_fmt(chosen.distance)} vs {_fmt(best.distance)})"
        )
    return Selection(
        chosen.trial, best.trial, chosen.value, best.value, se, sorted(c.trial for c in ties), rule, reason
    )


def _fmt(distance: float | None) -> str:
    return "n/a" if distance is None else f"{distance:.3g}"
