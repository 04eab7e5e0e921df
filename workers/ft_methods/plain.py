"""The plain AutoFT training method: AdamW (one parameter group) on the searched objective.

Not registered as a baseline: :func:`workers.autoft.run_objective` runs it when a trial's config picks no
fine-tuning method (:data:`~workers.trial_config.PLAIN_ADAMW`). It starts from the task's linear-probe head
by default and trains what :meth:`FTMethod.trainable` gives by default.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.ft_methods.base import FTMethod, HeadInit, HeadParams
from workers.trial_config import PLAIN_ADAMW


class PlainParams(HeadParams):
    """Plain AutoFT: only the starting head is configurable (the LP head by default)."""

    head_init: HeadInit = "lp"


class PlainAdamW(FTMethod):
    """AdamW with one group over the trainable parameters at the trial's LR and weight decay."""

    name = PLAIN_ADAMW
    summary = "AdamW on the searched AutoFT objective."
    Params = PlainParams

    def make_optimizer(
        self,
        named_params: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        return torch.optim.AdamW(list(named_params.values()), lr=lr, weight_decay=weight_decay)
