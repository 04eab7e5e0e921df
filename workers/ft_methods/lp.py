"""``lp``: linear probing, i.e. only the head is trained on frozen pretrained features.

The backbone is frozen (``requires_grad=False``) and runs in eval mode; the head is trained by the shared
loop with the caller's objective (cross-entropy by default), LR and weight decay, from a random head (default)
or from the task's cached linear-probe head. Kumar et al. (2022) show LP beats full FT out of distribution
when the pretrained features are good.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.ft_methods.base import HEAD_PREFIX, FTMethod, HeadParams, register_ft_method
from workers.model import Classifier


class LPParams(HeadParams):
    """Linear probing: only the starting head is configurable."""


@register_ft_method("lp")
class LinearProbe(FTMethod):
    summary = "Linear probe: train only the head on frozen pretrained features."
    paper = (
        "Kumar, Raghunathan, Jones, Ma, Liang. Fine-Tuning can Distort Pretrained Features and Underperform "
        "Out-of-Distribution. ICLR 2022. https://arxiv.org/abs/2202.10054"
    )
    Params = LPParams
    #: Trains no backbone: a search over it would not search fine-tuning.
    searchable = False

    def trainable(self, model: Classifier) -> Iterable[str]:
        return [n for n, _ in model.named_parameters() if n.startswith(HEAD_PREFIX)]
