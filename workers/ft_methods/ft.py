"""``ft``: plain full fine-tuning with cross-entropy from a fresh random head (the standard baseline).

Every parameter is trained with AdamW at the caller's LR and weight decay. This is the reference point of
every robust fine-tuning paper (e.g. Kumar et al. 2022, Wortsman et al. 2022).
"""

from __future__ import annotations

from workers.ft_methods.base import FTMethod, HeadParams, register_ft_method


class FTParams(HeadParams):
    """Plain fine-tuning: only the starting head is configurable."""


@register_ft_method("ft")
class FullFineTuning(FTMethod):
    summary = "Full fine-tuning with cross-entropy from a random head (AdamW)."
    paper = "Standard baseline; see Kumar et al., ICLR 2022, https://arxiv.org/abs/2202.10054"
    Params = FTParams
