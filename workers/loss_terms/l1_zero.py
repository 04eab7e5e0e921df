"""Mean |θ| over parameters."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term
from workers.loss_terms.weight_space import mean_weight_norm


@register_loss_term("l1_zero")
class L1Norm(LossTerm):
    summary = "Mean |θ| over parameters."
    kind = "weights"

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return mean_weight_norm(inputs, p=1, to_init=False)
