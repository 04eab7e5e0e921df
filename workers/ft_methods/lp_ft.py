"""``lp_ft``: LP-FT (Kumar et al. 2022): fit a linear probe first, then fine-tune everything from that head.

Stage 1 is the task's cached linear-probe head (:func:`workers.training.linear_probe`: the paper's
L2-regularised logistic regression on frozen features, its strength chosen by cross-validation). Stage 2 is
full fine-tuning from it with the caller's objective, LR and weight decay. Starting from a head that already fits the
pretrained features keeps the early gradients from distorting them. The paper's authors found the best LP-FT
LR far below the FT LR (AnanyaKumar/transfer_learning issue #3); the LR is the caller's (search it).
Simplification: the paper runs the backbone's BatchNorm/dropout in eval mode during stage 2
(``use_net_val_mode``); here the backbone trains in train mode like ``ft``.
"""

from __future__ import annotations

from workers.ft_methods.base import FTMethod, HeadInit, MethodParams, register_ft_method


class LPFTParams(MethodParams):
    """LP-FT has no hyperparameters beyond the common LR and weight decay."""


@register_ft_method("lp_ft")
class LPFT(FTMethod):
    summary = "LP-FT: linear probe, then full fine-tuning from the probed head."
    paper = (
        "Kumar, Raghunathan, Jones, Ma, Liang. Fine-Tuning can Distort Pretrained Features and Underperform "
        "Out-of-Distribution. ICLR 2022. https://arxiv.org/abs/2202.10054"
    )
    Params = LPFTParams

    def head_init(self) -> HeadInit:
        return "lp"
