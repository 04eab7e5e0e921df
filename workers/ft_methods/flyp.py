"""``flyp``: FLYP, "Finetune Like You Pretrain" (Goyal et al., CVPR 2023), for dual-encoder (CLIP-like) models.

FLYP fine-tunes both encoders with the pretraining contrastive loss between each image and a caption of its
class, and classifies with the zero-shot head rebuilt from the (fine-tuned) text encoder. The loss is
:func:`~workers.loss_terms.flyp.flyp_contrastive_loss`, open_clip's ``ClipLoss`` (symmetric InfoNCE, single process), as used by
``locuslab/FLYP src/models/flyp_loss.py`` and AutoFT's ``flyp`` term.

What a task must provide (checked by :func:`check_compatible`; the ``image-classification`` task does for
open_clip models):

- ``data.backbone`` is the image tower, returning image embeddings, and also has ``encode_text(tokens)``
  (the text tower) and a ``logit_scale`` parameter (log of the temperature's inverse, as in CLIP);
- ``data.class_text_tokens``: one tokenised caption per class (``[num_classes, seq_len]``).

Simplifications vs. the paper: one caption per class (the paper averages prompt templates for the zero-shot
head and samples one template per image for training), captions come from the class label (no image–caption
CSV), and the zero-shot head's bias is zero. The contrastive term is logged as ``loss/flyp/contrastive``;
by default it is the whole objective (no cross-entropy).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from workers.errors import InvalidSpec
from workers.ft_methods.base import (
    HEAD_PREFIX,
    FTMethod,
    HeadInit,
    MethodParams,
    RunContext,
    StepBatch,
    register_ft_method,
    tunable,
)
from workers.loss_terms.base import TextTower
from workers.loss_terms.flyp import class_caption_loss
from workers.model import Classifier
from workers.tasks.base import TaskData


def text_tower_problem(data: TaskData) -> str | None:
    """Why the task's model cannot run FLYP, or ``None`` when it can."""
    backbone = data.backbone
    if not callable(getattr(backbone, "encode_text", None)):
        return "its model has no text tower (backbone.encode_text)"
    if not isinstance(getattr(backbone, "logit_scale", None), torch.Tensor):
        return "its model has no logit_scale"
    tokens = getattr(data, "class_text_tokens", None)
    if not isinstance(tokens, torch.Tensor) or len(tokens) != data.num_classes:
        return "it provides no class_text_tokens (one tokenised caption per class)"
    return None


def check_compatible(data: TaskData) -> None:
    """Raise ``InvalidSpec(field="final.baselines")`` unless the task has a CLIP-like dual encoder."""
    problem = text_tower_problem(data)
    if problem is not None:
        raise InvalidSpec(
            f"flyp needs a dual-encoder (CLIP-like) model with a text tower, but {problem}",
            field="final.baselines",
        )


@torch.no_grad()
def zero_shot_head(model: Classifier, class_tokens: torch.Tensor) -> None:
    """Set the head to s·normalize(text_tower(captions)) with zero bias (s = exp(logit_scale))."""
    backbone: Any = model.backbone
    text = F.normalize(backbone.encode_text(class_tokens.to(model.head.weight.device)), dim=-1)
    model.head.weight.copy_(backbone.logit_scale.exp() * text)
    model.head.bias.zero_()


class FLYPParams(MethodParams):
    contrastive_weight: float = tunable(1.0, gt=0.0, le=100.0, low=1e-2, high=10.0, log=True,
                                        description="Weight of the contrastive term.")  # fmt: skip


@register_ft_method("flyp")
class FLYP(FTMethod):
    summary = (
        "FLYP: contrastive image–caption fine-tuning of both towers; zero-shot head from the text tower."
    )
    paper = (
        "Goyal, Kumar, Garg, Kolter, Raghunathan. Finetune like you pretrain: Improved finetuning of "
        "zero-shot vision models. CVPR 2023. https://arxiv.org/abs/2212.00638"
    )
    Params = FLYPParams
    params: FLYPParams
    requires_text_tower = True

    def check_compatible(self, data: TaskData) -> None:
        check_compatible(data)

    def head_init(self) -> HeadInit:
        return "lp"  # replaced by the zero-shot head in setup

    def default_loss_weights(self) -> dict[str, float]:
        return {}

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        check_compatible(ctx.data)
        tokens: torch.Tensor = getattr(ctx.data, "class_text_tokens", None)  # type: ignore[assignment]
        self._tokens = tokens.to(ctx.device)
        zero_shot_head(model, self._tokens)

    def trainable(self, model: Classifier) -> Iterable[str]:
        return [n for n, _ in model.named_parameters() if not n.startswith(HEAD_PREFIX)]

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        backbone: Any = model.backbone
        text = TextTower(backbone.encode_text, self._tokens, backbone.logit_scale)
        return {"flyp/contrastive": class_caption_loss(batch.features, batch.y, text)}

    def loss_weights(self) -> dict[str, float]:
        return {"flyp/contrastive": self.params.contrastive_weight}

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        zero_shot_head(model, self._tokens)
        return model, {}
