"""``wise_ft``: WiSE-FT (Wortsman et al., CVPR 2022): interpolate the fine-tuned weights with the pretrained ones.

θ(α) = (1 − α)·θ0 + α·θ_ft for every floating-point tensor of the state dict (``wise_ft_interpolate``; α = 0 is
exactly θ0, α = 1 exactly θ_ft; integer buffers are taken from θ_ft). The method runs any other registered
method (``base``, default ``ft``; ``base_params`` are its params) through every training hook, then
``finalize`` sweeps α over ``alphas`` and keeps the α with the best ``select_split``/``select_metric``
(default: OOD-validation accuracy, as this service scores on OOD validation; ties go to the smaller α, i.e.
closer to the pretrained weights). ``info`` holds ``wise_ft/alpha`` and the whole curve (``wise_ft/curve``:
one row per α with ``id_val`` and ``ood_val`` metrics).

The head: the paper interpolates a zero-shot head, which has a meaningful θ0. A new random head does not
(mlfoundations/wise-ft issue #8: "interpolate the backbone only and keep the trained head"). ``head="auto"``
therefore interpolates the head when the base starts from the linear-probe head (e.g. ``lp_ft``) and keeps the
fine-tuned head otherwise; ``"interpolate"`` / ``"fine_tuned"`` force either.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from workers.ft_methods.base import (
    FT_METHODS,
    HEAD_PREFIX,
    FTMethod,
    HeadInit,
    MethodParams,
    RunContext,
    StepBatch,
    register_ft_method,
)
from workers.metrics import METRICS
from workers.model import Classifier
from workers.tasks.base import TaskData

DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def wise_ft_interpolate(
    theta0_state: Mapping[str, torch.Tensor],
    theta1_state: Mapping[str, torch.Tensor],
    alpha: float,
    keys: Collection[str] | None = None,
) -> dict[str, torch.Tensor]:
    """(1 − α)·θ0 + α·θ1 for every floating tensor in ``keys`` (default: all); the rest is taken from θ1.

    Both state dicts must have the same keys and shapes. The result is a new dict of new tensors.
    """
    if set(theta0_state) != set(theta1_state):
        diff = sorted(set(theta0_state) ^ set(theta1_state))
        raise ValueError(f"state dicts differ in keys: {diff}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out: dict[str, torch.Tensor] = {}
    for k, t1 in theta1_state.items():
        t0 = theta0_state[k]
        if t0.shape != t1.shape:
            raise ValueError(f"{k}: shape {tuple(t0.shape)} vs {tuple(t1.shape)}")
        if t1.is_floating_point() and (keys is None or k in keys):
            out[k] = (1.0 - alpha) * t0.to(t1.device) + alpha * t1
        else:
            out[k] = t1.clone()
    return out


@dataclass(frozen=True)
class WiseSweep:
    """The outcome of an α sweep: the chosen α, its state dict and every α's scores."""

    alpha: float
    state: dict[str, torch.Tensor]
    curve: list[dict[str, float]]


def wise_ft_sweep(
    model: nn.Module,
    theta0_state: Mapping[str, torch.Tensor],
    theta1_state: Mapping[str, torch.Tensor],
    alphas: Iterable[float],
    score: Callable[[nn.Module], dict[str, float]],
    select: str,
    keys: Collection[str] | None = None,
) -> WiseSweep:
    """Evaluate θ(α) for every α (ascending) with ``score`` and pick the α maximising ``score(...)[select]``.

    ``model`` is not modified (a copy is scored); ties go to the smaller α.
    """
    scratch = copy.deepcopy(model)
    curve: list[dict[str, float]] = []
    best: tuple[float, float] | None = None
    for alpha in sorted(set(float(a) for a in alphas)):
        scratch.load_state_dict(wise_ft_interpolate(theta0_state, theta1_state, alpha, keys))
        scores = score(scratch)
        if select not in scores:
            raise ValueError(f"score() returned no {select!r}; it returned {sorted(scores)}")
        curve.append({"alpha": alpha, **scores})
        if best is None or scores[select] > best[1]:
            best = (alpha, scores[select])
    if best is None:
        raise ValueError("wise_ft_sweep needs at least one alpha")
    return WiseSweep(best[0], wise_ft_interpolate(theta0_state, theta1_state, best[0], keys), curve)


class WiseFTParams(MethodParams):
    base: str = Field(default="ft", description="The method whose result is interpolated.")
    base_params: dict[str, Any] = Field(default_factory=dict, description="The base method's params.")
    alphas: tuple[float, ...] = Field(default=DEFAULT_ALPHAS, min_length=1, description="α grid.")
    select_split: Literal["ood_val", "id_val"] = "ood_val"
    select_metric: str = "accuracy"
    head: Literal["auto", "interpolate", "fine_tuned"] = "auto"

    @field_validator("base")
    @classmethod
    def _known_base(cls, v: str) -> str:
        if v == "wise_ft" or v not in FT_METHODS:
            valid = ", ".join(n for n in FT_METHODS.names() if n != "wise_ft")
            raise ValueError(f"unknown base method {v!r}; valid: {valid}")
        return v

    @field_validator("alphas")
    @classmethod
    def _unit_interval(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= a <= 1.0 for a in v):
            raise ValueError("every alpha must be in [0, 1]")
        return v

    @field_validator("select_metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; valid: {', '.join(METRICS.names())}")
        return v


@register_ft_method("wise_ft")
class WiseFT(FTMethod):
    summary = "WiSE-FT: train a base method, then interpolate with θ0 at the α best on OOD validation."
    paper = (
        "Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi, Farhadi, Namkoong, "
        "Schmidt. Robust fine-tuning of zero-shot models. CVPR 2022. https://arxiv.org/abs/2109.01903"
    )
    Params = WiseFTParams
    params: WiseFTParams
    #: A post-hoc stage over a base method: a final-stage baseline, not a searched training method.
    searchable = False

    def __init__(self, params: MethodParams | None = None, *, field: str = "method.params") -> None:
        super().__init__(params)
        self.base: FTMethod = FT_METHODS.get(self.params.base).create(
            self.params.base_params, field=f"{field}.base_params"
        )

    @classmethod
    def create(cls, raw: Mapping[str, Any] | None = None, *, field: str = "method.params") -> FTMethod:
        return cls(cls.validate_params(raw, field=field), field=field)

    # Every training hook is the base method's.
    def check_compatible(self, data: TaskData) -> None:
        self.base.check_compatible(data)

    def head_init(self) -> HeadInit:
        return self.base.head_init()

    def default_loss_weights(self) -> dict[str, float]:
        return self.base.default_loss_weights()

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        self.base.setup(model, ctx)

    def trainable(self, model: Classifier) -> Iterable[str]:
        return self.base.trainable(model)

    def make_optimizer(
        self,
        named_params: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        return self.base.make_optimizer(
            named_params, lr=lr, weight_decay=weight_decay, init_params=init_params
        )

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        return self.base.extra_losses(model, batch, ctx)

    def loss_weights(self) -> dict[str, float]:
        return self.base.loss_weights()

    def after_step(self, model: Classifier, step: int, ctx: RunContext) -> None:
        self.base.after_step(model, step, ctx)

    def teardown(self, model: Classifier) -> None:
        self.base.teardown(model)

    def interpolate_head(self) -> bool:
        if self.params.head == "auto":
            return self.base.head_init() == "lp"
        return self.params.head == "interpolate"

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        model, base_info = self.base.finalize(model, ctx)
        theta1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        keys = [k for k in theta1 if self.interpolate_head() or not k.startswith(HEAD_PREFIX)]
        p = self.params
        metrics: Sequence[str] = tuple(dict.fromkeys((*ctx.metrics, p.select_metric)))
        sweep = wise_ft_sweep(
            model, ctx.initial_state, theta1, p.alphas,
            score=lambda m: ctx.evaluate(m, ("id_val", "ood_val"), metrics),
            select=f"{p.select_split}/{p.select_metric}", keys=keys,
        )  # fmt: skip
        model.load_state_dict(sweep.state)
        info = {
            **base_info,
            "wise_ft/alpha": sweep.alpha,
            "wise_ft/curve": sweep.curve,
            "wise_ft/base": self.base.name,
            "wise_ft/interpolated_head": self.interpolate_head(),
        }
        return model, info
