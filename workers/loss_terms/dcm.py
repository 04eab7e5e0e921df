"""DCM: entropy of the misclassified examples (confidence penalty on mistakes)."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs, LossTerm, register_loss_term, softmax_entropy


@register_loss_term("dcm")
class MisclassifiedEntropy(LossTerm):
    summary = "Mean over the batch of 1[argmax != y] * H(softmax(logits))."

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        wrong = (inputs.logits.argmax(dim=1) != inputs.targets).to(inputs.logits.dtype)
        return (wrong * softmax_entropy(inputs.logits)).mean()
