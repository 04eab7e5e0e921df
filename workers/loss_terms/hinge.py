"""Multi-class hinge loss (Crammer-Singer sum form), margin 1."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term


@register_loss_term("hinge")
class MultiClassHinge(LossTerm):
    summary = "Mean over examples of sum_{j != y} relu(z_j - z_y + 1)."

    margin = 1.0

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        z = inputs.logits
        zy = z.gather(1, inputs.targets.unsqueeze(1))
        margins = torch.relu(z - zy + self.margin)
        own = torch.nn.functional.one_hot(inputs.targets, z.shape[1]).bool()
        return margins.masked_fill(own, 0.0).sum(dim=1).mean()
