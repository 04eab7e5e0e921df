"""``spd``: Selective Projection Decay (Tian, Huang, Kira, NeurIPS 2024), an AdamW replacement.

SPD replaces weight decay toward zero by a decay toward the pretrained weights θ0 that is applied to a layer
(here: a parameter tensor, as in the reference ``GT-RIPL/Selective-Projection-Decay adamSPD.py``) only when
that layer's progress is *inconsistent* with its descent direction. Algorithm 1 of the paper, per tensor, with
g_t the gradient and θ̃_t the plain Adam step from θ_{t−1}:

    c_t = −g_tᵀ(θ_{t−1} − θ0)                                   (selection condition)
    if c_t < 0:
        r_t = max(0, ‖θ̃_t − θ0‖ − ‖θ_{t−1} − θ0‖) / ‖θ̃_t − θ0‖    (deviation ratio)
        θ_t = θ̃_t − λ·r_t·(θ̃_t − θ0)
    else:
        θ_t = θ̃_t

Sign convention (checked against robust_ft.md §2.1 and the reference code, ``condition = -sum(grad *
(param - pre)); if condition < 0``): c_t < 0 ⟺ ⟨g_t, θ_{t−1} − θ0⟩ > 0, i.e. the negative gradient points back
toward θ0 (the loss itself would like the layer closer to θ0: c_t is the hyper-gradient of the loss w.r.t. a
decay strength). The decay then only acts if the actual Adam update moved the layer *away* from θ0
(r_t > 0); a layer whose step moves toward θ0, or whose gradient agrees with its progress (c_t ≥ 0), is left
alone. With λ = 1 the decay is exactly the projection back onto the ball of radius ‖θ_{t−1} − θ0‖ (Eq. 10).

The decay replaces weight decay on the regularised (backbone) tensors. The new head has no meaningful θ0
(issue #1 of the reference repository), so by default it gets ordinary AdamW decay toward zero with the
caller's ``weight_decay``; ``decay_head=True`` applies SPD to it too, anchored at its initial value.
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
    register_ft_method,
    split_head,
    tunable,
)


class SPDAdamW(AdamW):
    """AdamW whose param groups may carry ``anchors`` (θ0 per param): those groups get SPD with ``spd_strength``.

    Groups without anchors (or with strength 0) are plain AdamW. Give SPD groups ``weight_decay=0`` (SPD
    replaces it). ``step`` takes no closure: the condition needs the gradient and weights before the step.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        spd_strength: float = 1.0,
    ) -> None:
        if spd_strength < 0:
            raise ValueError(f"spd_strength must be >= 0, got {spd_strength}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("anchors", None)
            group.setdefault("spd_strength", spd_strength)
            anchors = group["anchors"]
            if anchors is not None and len(anchors) != len(group["params"]):
                raise ValueError("an SPD group needs one anchor per parameter")
        self._selected: list[torch.Tensor] = []
        self._decayed: list[torch.Tensor] = []

    @property
    def last_selected(self) -> int:
        """Tensors selected by the condition (c_t < 0) in the last step."""
        return int(sum(int(s) for s in self._selected))

    @property
    def last_decayed(self) -> int:
        """Tensors actually decayed (c_t < 0 and r_t > 0) in the last step."""
        return int(sum(int(d) for d in self._decayed))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("SPDAdamW.step takes no closure")
        pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
        for group in self.param_groups:
            lam = float(group["spd_strength"])
            if group["anchors"] is None or lam == 0.0:
                continue
            for p, anchor in zip(group["params"], group["anchors"], strict=True):
                if p.grad is None:
                    continue
                prev = p - anchor
                selected = -(p.grad * prev).sum() < 0  # c_t < 0, kept on device (no sync)
                pending.append((p, anchor, selected, torch.linalg.vector_norm(prev), lam))
        super().step()
        self._selected, self._decayed = [], []
        for p, anchor, selected, prev_norm, lam in pending:
            dev = p - anchor
            norm = torch.linalg.vector_norm(dev)
            ratio = ((norm - prev_norm) / norm).clamp(0.0, 1.0).nan_to_num(0.0)
            ratio = torch.where(selected, ratio, torch.zeros_like(ratio))
            p.sub_(lam * ratio * dev)
            self._selected.append(selected)
            self._decayed.append(ratio > 0)


class SPDParams(HeadParams):
    strength: float = tunable(1.0, ge=0.0, le=10.0, low=1e-2, high=10.0, log=True,
                              description="λ, the decay strength (1: project onto the previous radius).")  # fmt: skip
    decay_head: bool = Field(default=False, description="Also apply SPD to the head (anchor: its init).")


@register_ft_method("spd")
class SPD(FTMethod):
    summary = "SPD: AdamW whose decay pulls a layer toward θ0 only when its progress is inconsistent."
    paper = (
        "Tian, Huang, Kira. Rethinking Weight Decay for Robust Fine-Tuning of Foundation Models. "
        "NeurIPS 2024. https://arxiv.org/abs/2411.01713"
    )
    Params = SPDParams
    params: SPDParams
    replaces_weight_decay = True

    def make_optimizer(
        self,
        named_params: dict[str, torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        backbone, head = split_head(named_params)
        anchored, free = (backbone + head, []) if self.params.decay_head else (backbone, head)
        groups: list[dict[str, Any]] = [
            {"name": "spd", "params": [named_params[n] for n in anchored],
             "anchors": [init_params[n] for n in anchored], "weight_decay": 0.0},
            {"name": "head", "params": [named_params[n] for n in free], "weight_decay": weight_decay},
        ]  # fmt: skip
        return SPDAdamW([g for g in groups if g["params"]], lr=lr, spd_strength=self.params.strength)
