"""SPD (Algorithm 1 of Tian, Huang, Kira 2024) on hand-built 2-D cases: both branches of the condition.

On a first Adam step θ̃ = θ − lr·g/(|g| + eps) elementwise (m̂ = g, v̂ = g²), so every case can be computed
by hand. θ0 = 0 throughout; c = −gᵀ(θ − θ0).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method
from workers.ft_methods.spd import SPDAdamW
from workers.prepared import PreparedTask


def spd_step(theta: list[float], grad: list[float], lr: float, lam: float) -> tuple[torch.Tensor, SPDAdamW]:
    p = torch.nn.Parameter(torch.tensor(theta))
    opt = SPDAdamW([{"params": [p], "anchors": [torch.zeros(2)]}], lr=lr, spd_strength=lam)
    p.grad = torch.tensor(grad)
    opt.step()
    return p.detach(), opt


def adam_step(theta: list[float], grad: list[float], lr: float) -> torch.Tensor:
    return torch.tensor(theta) - lr * torch.tensor(grad) / (torch.tensor(grad).abs() + 1e-8)


def test_selected_and_moving_away_is_decayed_by_lambda_r() -> None:
    # gᵀθ = 1 > 0 → c = −1 < 0: the descent direction points back toward θ0 (inconsistent progress).
    # Adam moves θ = (1, 0) to θ̃ = (−1, 2): ‖θ̃‖ = √5 > 1, so r = (√5 − 1)/√5 and θ = θ̃·(1 − λ·r).
    theta, opt = spd_step([1.0, 0.0], [1.0, -1.0], lr=2.0, lam=0.5)
    tilde = torch.tensor([-1.0, 2.0])
    r = (math.sqrt(5) - 1) / math.sqrt(5)
    assert torch.allclose(adam_step([1.0, 0.0], [1.0, -1.0], 2.0), tilde, atol=1e-6)
    assert torch.allclose(theta, tilde * (1 - 0.5 * r), atol=1e-6)
    assert (opt.last_selected, opt.last_decayed) == (1, 1)


def test_lambda_one_projects_back_onto_the_previous_radius() -> None:
    theta, _ = spd_step([1.0, 0.0], [1.0, -1.0], lr=2.0, lam=1.0)
    assert float(theta.norm()) == pytest.approx(1.0, abs=1e-6)  # Eq. 10: ‖θ_t − θ0‖ = ‖θ_{t−1} − θ0‖


def test_consistent_progress_moving_away_is_not_decayed() -> None:
    # gᵀθ = −1 < 0 → c = 1 ≥ 0: the gradient agrees with the progress away from θ0; plain Adam step.
    theta, opt = spd_step([1.0, 0.0], [-1.0, 0.0], lr=0.5, lam=1.0)
    assert torch.allclose(theta, torch.tensor([1.5, 0.0]), atol=1e-6)
    assert float(theta.norm()) > 1.0  # moved away from θ0, yet no decay
    assert (opt.last_selected, opt.last_decayed) == (0, 0)


def test_selected_but_moving_toward_theta0_is_not_decayed() -> None:
    # c = −1 < 0 (selected) but the step moves toward θ0 (‖θ̃‖ = 0.5 < 1), so r = 0.
    theta, opt = spd_step([1.0, 0.0], [1.0, 0.0], lr=0.5, lam=1.0)
    assert torch.allclose(theta, torch.tensor([0.5, 0.0]), atol=1e-6)
    assert (opt.last_selected, opt.last_decayed) == (1, 0)


def test_zero_strength_is_plain_adamw() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4))
    b = torch.nn.Parameter(a.detach().clone())
    spd = SPDAdamW([{"params": [a], "anchors": [a.detach().clone() + 0.3]}], lr=0.1, spd_strength=0.0)
    adamw = torch.optim.AdamW([b], lr=0.1, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(3, 4)
        a.grad, b.grad = g.clone(), g.clone()
        spd.step()
        adamw.step()
    assert torch.equal(a, b)


def test_spd_method_uses_lambda_and_keeps_head_weight_decay(prepared: PreparedTask) -> None:
    result = run(create_method("spd", {"strength": 0.5}), prepared, weight_decay=0.2)
    groups = {g["name"]: g for g in result.info["optimizer"]["groups"]}
    assert groups["spd"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.2
    assert result.info["optimizer"]["type"] == "SPDAdamW"
