"""FLYP's contrastive term: CLIP's pretraining loss between each image and the caption of its class.

AutoFT searches its weight like any other term (its ``flyp`` loss). Needs a dual-encoder model: the task
must provide a text tower and one caption per class (the ``image-classification`` task does for open_clip
models). With a non-zero weight the text tower is trained too, as in FLYP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.loss_terms.base import LossInputs, LossTerm, TextTower, register_loss_term


def flyp_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows: ½·[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)].

    ``image_features[i]`` and ``text_features[i]`` are a positive pair, every other row a negative;
    ``logit_scale`` is the multiplier s (CLIP's ``logit_scale.exp()``). Like open_clip's ``ClipLoss`` the
    features are used as given: normalise them first.
    """
    if image_features.shape != text_features.shape or image_features.dim() != 2:
        raise ValueError(
            f"need two [n, d] feature matrices, got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    logits_per_image = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(image_features), device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def class_caption_loss(features: torch.Tensor, targets: torch.Tensor, text: TextTower) -> torch.Tensor:
    """FLYP's loss for a batch: each image's features against the caption of its class, as CLIP pairs
    (both normalised, scaled by ``exp(logit_scale)``). Shared by this term and the ``flyp`` method."""
    image = F.normalize(features.float(), dim=-1)
    captions = F.normalize(text.encode(text.class_tokens[targets]).float(), dim=-1)
    return flyp_contrastive_loss(image, captions, text.logit_scale.float().exp())


@register_loss_term("flyp")
class FLYPContrastive(LossTerm):
    summary = "FLYP: CLIP's contrastive loss between each image and its class caption (dual-encoder models)."
    kind = "contrastive"
    needs_text_tower = True

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.features is None or inputs.text is None:
            raise ValueError("the flyp term needs image features and a text tower (a CLIP-like model)")
        return class_caption_loss(inputs.features, inputs.targets, inputs.text)
