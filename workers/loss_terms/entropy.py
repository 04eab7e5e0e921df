"""Mean prediction entropy."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term, softmax_entropy


@register_loss_term("entropy")
class Entropy(LossTerm):
    summary = "Mean entropy of softmax(logits) over the batch."

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return softmax_entropy(inputs.logits).mean()
