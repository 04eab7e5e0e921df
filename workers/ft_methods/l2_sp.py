"""``l2_sp``: L2-SP (Li, Grandvalet, Davoine 2018): pull the backbone toward its pretrained weights.

Loss = objective + α/2·‖w_S − w0_S‖² + β/2·‖w_head‖², where w_S are all backbone parameters, w0_S their
pretrained values and w_head the new classifier's parameters (weight and bias; the head has no meaningful
starting point, so it is decayed toward zero). The two penalties are logged as ``loss/l2_sp/backbone``
(½‖w_S − w0_S‖²) and ``loss/l2_sp/head`` (½‖w_head‖²) with weights α and β. As in the paper the penalties
*replace* weight decay: the optimizer is AdamW with weight decay 0 (the caller's value is not used; ``info``
records the optimizer as built). Defaults α = β = 0.01 follow tllib's and lixingjian/DELTA's L2-SP examples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from workers.ft_methods.base import (
    HEAD_PREFIX,
    FTMethod,
    HeadParams,
    RunContext,
    StepBatch,
    adamw_backbone_head,
    register_ft_method,
    tunable,
)
from workers.model import Classifier


class L2SPParams(HeadParams):
    alpha: float = tunable(
        0.01, ge=0.0, le=100.0, low=1e-4, high=10.0, log=True, description="Weight of ½‖w_S − w0_S‖²."
    )
    beta: float = tunable(
        0.01, ge=0.0, le=100.0, low=1e-4, high=10.0, log=True, description="Weight of ½‖w_head‖²."
    )


def l2_sp_terms(
    named_params: Mapping[str, torch.Tensor], init_params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``{"l2_sp/backbone": ½Σ‖w − w0‖² over the backbone, "l2_sp/head": ½Σ‖w‖² over the head}``."""
    backbone = [
        (w - init_params[n]).pow(2).sum() for n, w in named_params.items() if not n.startswith(HEAD_PREFIX)
    ]
    head = [w.pow(2).sum() for n, w in named_params.items() if n.startswith(HEAD_PREFIX)]
    ref = next(iter(named_params.values()))
    zero = ref.new_zeros(())
    return {
        "l2_sp/backbone": 0.5 * torch.stack(backbone).sum() if backbone else zero,
        "l2_sp/head": 0.5 * torch.stack(head).sum() if head else zero,
    }


@register_ft_method("l2_sp")
class L2SP(FTMethod):
    summary = "L2-SP: α/2‖w_backbone − w0‖² + β/2‖w_head‖² instead of weight decay."
    paper = (
        "Li, Grandvalet, Davoine. Explicit Inductive Bias for Transfer Learning with Convolutional Networks. "
        "ICML 2018. https://arxiv.org/abs/1802.01483"
    )
    Params = L2SPParams
    params: L2SPParams
    replaces_weight_decay = True

    def make_optimizer(
        self,
        named_params: dict[str, torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        return adamw_backbone_head(named_params, lr=lr, backbone_weight_decay=0.0, head_weight_decay=0.0)

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        return l2_sp_terms(live, ctx.init_params)

    def loss_weights(self) -> dict[str, float]:
        return {"l2_sp/backbone": self.params.alpha, "l2_sp/head": self.params.beta}
