"""``tpgm``: Trainable Projected Gradient Method (Tian et al., CVPR 2023).

After the optimizer step, each parameter tensor θ_l (the backbone's; the new head is excluded, as the paper's
``exclude_list``) is projected onto a ball around its pretrained value:
θ_l ← θ0_l + min(1, γ_l/‖θ_l − θ0_l‖)·(θ_l − θ0_l), one radius γ_l per tensor (``norm="l2"``) or per output row
(``norm="mars"``, the reference code's MARS norm). Two ways to choose γ:

- ``mode="learned"`` (the paper): every ``proj_freq`` steps, ``proj_iters`` Adam steps (LR ``proj_lr``) on the
  radii minimise the cross-entropy of the *projected* model on a held-out split (``proj_split``: ``id_val``
  as in the paper's DomainNet code, or ``ood_val``), then the projection is applied. As in
  ``PotatoTian/TPGM utils/tpgm.py``: γ starts at min‖θ − θ0‖/2 at the first projection, is kept in
  [1e-8, max‖θ − θ0‖] and enters through relu. ``proj_freq=0`` projects once, post hoc, after training
  (how the paper treats its ImageNet ViT models; give it more ``proj_iters`` then).
- ``mode="fixed"`` (a simplification, not in the paper): γ_l = ``radius_fraction``·‖θ0_l‖ (per row for mars),
  fixed, applied every ``proj_freq`` steps. A tensor whose pretrained value is zero therefore stays at zero.

In both modes the final model is projected (``finalize`` projects once more if the last step was not a
projection step), so the returned weights satisfy the constraint. ``info["tpgm/radius"]`` lists γ per tensor.
The caller's weight decay is applied by AdamW before the projection, as in the reference code.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from workers.ft_methods.base import (
    HEAD_PREFIX,
    FTMethod,
    HeadParams,
    RunContext,
    register_ft_method,
    tunable,
)
from workers.ft_methods.projection import EPS, Norm, deviation_norm, project_onto_ball
from workers.model import Classifier
from workers.tasks.base import Split


class TPGMParams(HeadParams):
    mode: Literal["learned", "fixed"] = Field(default="learned", description="Learn γ (paper) or fix it.")
    norm: Norm = Field(default="l2", description="l2: one radius per tensor; mars: per output row (L1).")
    proj_freq: int = Field(
        default=1, ge=0, le=100_000, description="Project every k steps; 0: only at the end."
    )
    proj_iters: int = tunable(1, ge=1, le=10_000, low=1, high=50, integer=True, log=True,
                              description="Radius-training iterations per projection (learned).")  # fmt: skip
    proj_lr: float = tunable(1e-2, gt=0.0, le=10.0, low=1e-4, high=1.0, log=True,
                             description="Adam LR of the radii (learned).")  # fmt: skip
    proj_split: Literal["id_val", "ood_val"] = Field(default="id_val", description="Data that trains γ.")
    proj_batch_size: int = Field(default=64, ge=1, le=100_000)
    radius_fraction: float = tunable(0.1, gt=0.0, le=100.0, low=1e-3, high=1.0, log=True,
                                     description="Fixed mode: γ_l = fraction·‖θ0_l‖.")  # fmt: skip
    project_head: bool = Field(default=False, description="Also constrain the (new) head.")


class LearnedRadii:
    """TPGM's trainable radii: one scalar γ per projected tensor, trained with Adam on held-out CE."""

    def __init__(self, names: list[str], norm: Norm, lr: float, device: torch.device) -> None:
        self.norm = norm
        self.radii = {n: torch.nn.Parameter(torch.zeros((), device=device)) for n in names}
        self.optimizer = torch.optim.Adam(list(self.radii.values()), lr=lr)
        self.initialised = False

    @torch.no_grad()
    def _clip(self, deltas: dict[str, torch.Tensor]) -> None:
        for n, gamma in self.radii.items():
            norms = deviation_norm(deltas[n], self.norm)
            if not self.initialised:
                gamma.copy_(norms.min() / 2)
            if gamma <= 0:
                gamma.fill_(1e-8)
            if (F.relu(gamma) / (norms + EPS)).min() > 1:
                gamma.copy_(norms.max())
        self.initialised = True

    def fit(
        self,
        model: Classifier,
        init_params: dict[str, torch.Tensor],
        split: Split,
        *,
        iters: int,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        """``iters`` Adam steps on γ minimising the CE of the projected model on minibatches of ``split``."""
        live = dict(model.named_parameters())
        was_training = model.training
        model.eval()
        for _ in range(iters):
            deltas = {n: (live[n] - init_params[n]).detach() for n in self.radii}
            self._clip(deltas)
            idx = torch.randperm(len(split), generator=generator)[:batch_size]
            x, y = split.x[idx].to(device), split.y[idx].to(device)
            weights = {n: w.detach() for n, w in live.items()}
            for n in self.radii:  # differentiable in γ only
                weights[n] = init_params[n] + self._ratio(n, deltas[n]) * deltas[n]
            loss = F.cross_entropy(functional_call(model, weights, (x,)), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        model.train(was_training)

    def _ratio(self, name: str, delta: torch.Tensor) -> torch.Tensor:
        return (F.relu(self.radii[name]) / (deviation_norm(delta, self.norm) + EPS)).clamp(0.0, 1.0)

    @torch.no_grad()
    def apply(self, model: Classifier, init_params: dict[str, torch.Tensor]) -> None:
        """Project the live weights in place with the current (clipped) radii."""
        live = dict(model.named_parameters())
        deltas = {n: live[n] - init_params[n] for n in self.radii}
        self._clip(deltas)
        for n in self.radii:
            live[n].copy_(project_onto_ball(live[n], init_params[n], F.relu(self.radii[n]), self.norm))

    def values(self) -> dict[str, float]:
        return {n: float(F.relu(g.detach())) for n, g in self.radii.items()}


@register_ft_method("tpgm")
class TPGM(FTMethod):
    summary = (
        "TPGM: project each layer onto a ball of (learned or fixed) radius around the pretrained weights."
    )
    paper = (
        "Tian, Dai, Ma, He, Liu, Kira. Trainable Projected Gradient Method for Robust Fine-tuning. "
        "CVPR 2023. https://arxiv.org/abs/2303.10720"
    )
    Params = TPGMParams
    params: TPGMParams

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        self._names: list[str] = []
        self._fixed: dict[str, torch.Tensor] = {}
        self._learned: LearnedRadii | None = None
        self._last_projected = 0
        self._generator = torch.Generator().manual_seed(ctx.seed + 7919)

    def _ensure(self, model: Classifier, ctx: RunContext) -> None:
        if self._names:
            return
        p = self.params
        self._names = [
            n
            for n, w in model.named_parameters()
            if w.requires_grad and (p.project_head or not n.startswith(HEAD_PREFIX))
        ]
        if p.mode == "fixed":
            self._fixed = {
                n: p.radius_fraction * deviation_norm(ctx.init_params[n], p.norm) for n in self._names
            }
        else:
            self._learned = LearnedRadii(self._names, p.norm, p.proj_lr, ctx.device)

    def _project(self, model: Classifier, step: int, ctx: RunContext) -> None:
        self._ensure(model, ctx)
        p = self.params
        if self._learned is not None:
            split = getattr(ctx.data, p.proj_split)
            self._learned.fit(model, ctx.init_params, split, iters=p.proj_iters, batch_size=p.proj_batch_size,
                              generator=self._generator, device=ctx.device)  # fmt: skip
            self._learned.apply(model, ctx.init_params)
        else:
            live = dict(model.named_parameters())
            with torch.no_grad():
                for n in self._names:
                    live[n].copy_(project_onto_ball(live[n], ctx.init_params[n], self._fixed[n], p.norm))
        self._last_projected = step

    def after_step(self, model: Classifier, step: int, ctx: RunContext) -> None:
        if self.params.proj_freq and step % self.params.proj_freq == 0:
            self._project(model, step, ctx)

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        if self._last_projected != ctx.steps:
            self._project(model, ctx.steps, ctx)
        radii = (
            self._learned.values()
            if self._learned is not None
            else {n: float(r.max()) for n, r in self._fixed.items()}
        )
        return model, {"tpgm/mode": self.params.mode, "tpgm/radius": radii}

    def radii(self) -> dict[str, torch.Tensor]:
        """The current radius of every projected tensor (relu(γ) when learned; per row for mars)."""
        if self._learned is not None:
            return {n: F.relu(g.detach()) for n, g in self._learned.radii.items()}
        return dict(self._fixed)
