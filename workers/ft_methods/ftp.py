"""``ftp``: Fast Trainable Projection (Tian, Liu, Smith, Kira, NeurIPS 2023) as an AdamW wrapper.

FTP is TPGM without the separate radius-training loop: the radius γ of every projected tensor is updated at
every step from the *training* gradient. Per parameter tensor, after the AdamW step θ̃_t (following
``GT-RIPL/FTP util/FTP.py``, class ``FTP``):

- c_t = θ̃_t − θ0 (the unconstrained deviation), n_t = ‖c_t‖ (per output row for ``norm="mars"``, the
  reference's choice; one value per tensor for ``"l2"``) + 1e-8;
- step 1: γ_1 = 1e-8 (so the first update of projected tensors is almost entirely undone, as in the
  reference); afterwards the hyper-gradient ∇γ = Σ_rows ⟨g_t, c_{t−1}⟩ / n_{t−1} (g_t: the current gradient,
  the derivative of the loss through θ_{t−1} = θ0 + γ_{t−1}·c_{t−1}/n_{t−1}) is annealed when positive
  (∇γ ← k·∇γ; k = 1 keeps the full shrinking signal, k = 0 never shrinks γ), fed to an Adam update with
  step μ = ``gamma_lr`` (1e-2), β = (0.9, 0.999), bias-corrected with the global step t, and clipped to
  [1e-8, max n_t];
- θ_t = θ0 + clamp(γ_t/n_t, 0, 1)·c_t.

The head (a new layer) is excluded by default (the reference's ``exclude_set``). The caller's weight decay is
decoupled decay toward zero inside the AdamW step, as in the reference ``AdamP``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import Field
from torch.optim import AdamW

from workers.ft_methods.base import (
    FTMethod,
    HeadParams,
    RunContext,
    register_ft_method,
    split_head,
    tunable,
)
from workers.ft_methods.projection import EPS, Norm, deviation_norm
from workers.model import Classifier

_BETA1, _BETA2 = 0.9, 0.999


class FTPAdamW(AdamW):
    """AdamW followed by FTP's trainable projection for every param group that carries ``anchors``.

    A projected group is ``{"params": [...], "anchors": [θ0 per param, same order], ...}``; groups without
    ``anchors`` are plain AdamW. ``k``, ``gamma_lr`` and ``norm`` are defaults that a group may override.
    ``step`` takes no closure (the hyper-gradient needs the gradient the step used).
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        k: float = 1.0,
        gamma_lr: float = 1e-2,
        norm: Norm = "mars",
    ) -> None:
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {k}")
        if gamma_lr <= 0:
            raise ValueError(f"gamma_lr must be > 0, got {gamma_lr}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("anchors", None)
            group.setdefault("k", k)
            group.setdefault("gamma_lr", gamma_lr)
            group.setdefault("norm", norm)
            anchors = group["anchors"]
            if anchors is not None and len(anchors) != len(group["params"]):
                raise ValueError("a projected group needs one anchor per parameter")
        self.ftp_step = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("FTPAdamW.step takes no closure")
        super().step()
        self.ftp_step += 1
        t = self.ftp_step
        for group in self.param_groups:
            if group["anchors"] is None:
                continue
            for p, anchor in zip(group["params"], group["anchors"], strict=True):
                if p.grad is not None:
                    self._project(p, anchor, group, t)

    def _project(self, p: torch.Tensor, anchor: torch.Tensor, group: dict[str, Any], t: int) -> None:
        state = self.state[p]
        c = p - anchor
        norms = deviation_norm(c, group["norm"]) + EPS
        if "ftp_gamma" not in state:
            gamma = torch.full((), 1e-8, device=p.device, dtype=p.dtype)
            state["ftp_m"] = torch.zeros((), device=p.device, dtype=p.dtype)
            state["ftp_v"] = torch.zeros((), device=p.device, dtype=p.dtype)
        else:
            grad = (p.grad * state["ftp_prev_c"] * state["ftp_prev_scale"]).sum()
            grad = torch.where(grad > 0, grad * group["k"], grad)
            state["ftp_m"].mul_(_BETA1).add_((1 - _BETA1) * grad)
            state["ftp_v"].mul_(_BETA2).add_((1 - _BETA2) * grad * grad)
            m_hat = state["ftp_m"] / (1 - _BETA1**t)
            v_hat = state["ftp_v"] / (1 - _BETA2**t)
            gamma = state["ftp_gamma"] - group["gamma_lr"] * m_hat / (v_hat.sqrt() + 1e-8)
            gamma = torch.minimum(gamma.clamp(min=1e-8), norms.max())
        p.copy_(anchor + (gamma / norms).clamp(0.0, 1.0) * c)
        state["ftp_gamma"] = gamma
        state["ftp_prev_c"] = c
        state["ftp_prev_scale"] = 1.0 / norms

    def radii(self) -> dict[int, torch.Tensor]:
        """γ by ``id(param)`` for every projected parameter that has taken a step."""
        return {id(p): s["ftp_gamma"] for p, s in self.state.items() if "ftp_gamma" in s}


class FTPParams(HeadParams):
    k: float = tunable(1.0, ge=0.0, le=1.0, low=0.0, high=1.0,
                       description="Annealing of positive radius gradients (1: strongest constraint).")  # fmt: skip
    norm: Norm = Field(default="mars", description="mars (reference): per output row; l2: per tensor.")
    gamma_lr: float = Field(default=1e-2, gt=0.0, le=1.0, description="μ, the radius update step.")
    project_head: bool = Field(default=False, description="Also constrain the (new) head.")


@register_ft_method("ftp")
class FTP(FTMethod):
    summary = "FTP: AdamW with a per-layer projection radius trained every step from the training gradient."
    paper = (
        "Tian, Liu, Smith, Kira. Fast Trainable Projection for Robust Fine-Tuning. NeurIPS 2023. "
        "https://arxiv.org/abs/2310.19182"
    )
    Params = FTPParams
    params: FTPParams
    _names: dict[int, str]
    _optimizer: FTPAdamW | None

    def make_optimizer(
        self,
        named_params: dict[str, torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        p = self.params
        backbone, head = split_head(named_params)
        projected, free = (backbone + head, []) if p.project_head else (backbone, head)
        self._names = {id(named_params[n]): n for n in projected}
        groups: list[dict[str, Any]] = [
            {"name": "projected", "params": [named_params[n] for n in projected],
             "anchors": [init_params[n] for n in projected]},
            {"name": "free", "params": [named_params[n] for n in free]},
        ]  # fmt: skip
        self._optimizer = FTPAdamW(
            [g for g in groups if g["params"]],
            lr=lr,
            weight_decay=weight_decay,
            k=p.k,
            gamma_lr=p.gamma_lr,
            norm=p.norm,
        )
        return self._optimizer

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        self._names = {}
        self._optimizer = None

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        radii = self._optimizer.radii() if self._optimizer is not None else {}
        return model, {
            "ftp/radius": {self._names[i]: float(g.max()) for i, g in radii.items() if i in self._names}
        }
