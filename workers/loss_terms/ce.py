"""Cross-entropy with the labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term


@register_loss_term("ce")
class CrossEntropy(LossTerm):
    summary = "Cross-entropy of softmax(logits) with the labels."

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return F.cross_entropy(inputs.logits, inputs.targets)
