"""FLYP: the contrastive loss on a hand-computed 2x2 case; rejected without a text tower; runs on a toy CLIP."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoft_service.errors import InvalidSpec
from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method, flyp_contrastive_loss
from workers.ft_methods.flyp import check_compatible
from workers.prepared import PreparedTask
from workers.tasks.base import Split, TaskData


def test_contrastive_loss_by_hand() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # s·I·Tᵀ = 2·[[1, 0.6], [0, 0.8]]; CE(row i, label i) = log(1 + e^{-(z_ii − z_ij)})
    per_image = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-1.6))) / 2
    per_text = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.4))) / 2
    assert float(flyp_contrastive_loss(image, text, 2.0)) == pytest.approx((per_image + per_text) / 2)


def test_rejected_for_the_demo_task(prepared: PreparedTask) -> None:
    with pytest.raises(InvalidSpec) as e:
        check_compatible(prepared.data)
    assert e.value.field == "final.baselines" and "text tower" in e.value.message
    method = create_method("flyp")
    assert method.requires_text_tower
    with pytest.raises(InvalidSpec):
        method.check_compatible(prepared.data)


class ToyCLIP(nn.Module):
    """Image tower: linear map of the flattened image; text tower: mean token embedding."""

    def __init__(self, in_dim: int, dim: int, vocab: int) -> None:
        super().__init__()
        self.image = nn.Linear(in_dim, dim)
        self.text = nn.Embedding(vocab, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x.flatten(1)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens).mean(dim=1)


@dataclass
class TextTaskData(TaskData):
    class_text_tokens: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def test_runs_on_a_toy_dual_encoder() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(centers[y] + 0.3 * torch.randn(n, 6, generator=g), y)

    torch.manual_seed(0)
    data = TextTaskData(
        backbone=ToyCLIP(6, 8, vocab=10), feature_dim=8, num_classes=3,
        id_train=split(30), id_val=split(12), id_test=split(12), ood_val=split(12), ood_tests={"shift": split(12)},
        class_text_tokens=torch.tensor([[1, 2], [3, 4], [5, 6]]),
    )  # fmt: skip
    check_compatible(data)
    prepared = PreparedTask(data=data, lp_head=nn.Linear(8, 3))
    seen: list[dict[str, float]] = []
    result = run(
        create_method("flyp"), prepared, steps=4, lr=1e-2, eval_every=2, on_eval=lambda s, m: seen.append(m)
    )
    assert "train/loss/ce" not in seen[0] and seen[1]["train/loss/flyp/contrastive"] > 0
    assert math.isfinite(result.metrics["ood_test/mean/accuracy"])
    # the head is the zero-shot head of the fine-tuned text tower
    tuned, pretrained = result.model.backbone, data.backbone
    assert isinstance(tuned, ToyCLIP) and isinstance(pretrained, ToyCLIP)
    text = F.normalize(tuned.encode_text(data.class_text_tokens), dim=-1)
    assert torch.allclose(result.model.head.weight, (tuned.logit_scale.exp() * text).detach())
    assert not torch.equal(tuned.text.weight, pretrained.text.weight)
