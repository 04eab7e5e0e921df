"""Mean |θ − θ0| over parameters (θ0 = pretrained weights)."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term
from workers.loss_terms.weight_space import mean_weight_norm


@register_loss_term("l1_init")
class L1ToInit(LossTerm):
    summary = "Mean |θ − θ0| over parameters (θ0 = pretrained weights)."
    kind = "weights"

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return mean_weight_norm(inputs, p=1, to_init=True)
