"""L2-SP equals α/2‖w_S − w0_S‖² + β/2‖w_head‖² on a tiny hand-set model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method
from workers.ft_methods.l2_sp import l2_sp_terms
from workers.model import Classifier
from workers.prepared import PreparedTask


def test_value_equals_the_formula() -> None:
    backbone, head = nn.Linear(2, 2), nn.Linear(2, 1)
    model = Classifier(backbone, head)
    init = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    init["backbone.bias"] = torch.tensor([0.5, -0.5])
    with torch.no_grad():
        backbone.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))  # ‖Δ‖² = 6 (θ0 = 0)
        backbone.bias.copy_(torch.tensor([0.5, 0.5]))  # Δ = (0, 1): ‖Δ‖² = 1, backbone total 7
        head.weight.copy_(torch.tensor([[3.0, 0.0]]))  # ‖w‖² = 9
        head.bias.copy_(torch.tensor([1.0]))  # ‖b‖² = 1, head total 10 (θ0 is ignored for the head)
    terms = l2_sp_terms(dict(model.named_parameters()), init)
    terms = {k: v.detach() for k, v in terms.items()}
    assert float(terms["l2_sp/backbone"]) == pytest.approx(0.5 * 7)
    assert float(terms["l2_sp/head"]) == pytest.approx(0.5 * 10)
    method = create_method("l2_sp", {"alpha": 0.1, "beta": 0.01})
    w = method.loss_weights()
    total = sum(w[k] * v for k, v in terms.items())
    assert float(total) == pytest.approx(0.1 / 2 * 7 + 0.01 / 2 * 10)


def test_l2_sp_in_training_logs_both_terms_and_replaces_weight_decay(prepared: PreparedTask) -> None:
    seen: list[dict[str, float]] = []
    result = run(create_method("l2_sp"), prepared, steps=2, eval_every=1, on_eval=lambda s, m: seen.append(m))
    assert seen[0]["train/loss/l2_sp/backbone"] == 0.0 and seen[1]["train/loss/l2_sp/backbone"] > 0.0
    assert seen[0]["train/loss/l2_sp/head"] > 0.0
    assert all(g["weight_decay"] == 0.0 for g in result.info["optimizer"]["groups"])
