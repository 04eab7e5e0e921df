"""WiSE-FT: exact endpoints, the midpoint, the sweep's choice, and the method on top of a base method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoft_service.errors import InvalidSpec
from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method, wise_ft_interpolate, wise_ft_sweep
from workers.ft_methods.wise_ft import DEFAULT_ALPHAS
from workers.prepared import PreparedTask, build_model


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    states = []
    for m in (a, b):
        state = m.state_dict()
        for k in ("weight", "bias", "running_mean"):
            state[k] = torch.randn(3)
        states.append(state)
    states[1]["num_batches_tracked"] = torch.tensor(7)
    return states[0], states[1]


def test_endpoints_are_exact_and_half_is_the_midpoint() -> None:
    t0, t1 = _states()
    at0, at1, half = (wise_ft_interpolate(t0, t1, a) for a in (0.0, 1.0, 0.5))
    for k in t0:
        if t0[k].is_floating_point():
            assert torch.equal(at0[k], t0[k]) and torch.equal(at1[k], t1[k]), k
            assert torch.allclose(half[k], (t0[k] + t1[k]) / 2, atol=0, rtol=1e-7), k
    assert int(at0["num_batches_tracked"]) == 7  # integer buffers come from θ1
    assert at1["weight"] is not t1["weight"]  # new tensors, never views of the inputs


def test_interpolation_refuses_mismatched_states() -> None:
    t0, t1 = _states()
    with pytest.raises(ValueError, match="keys"):
        wise_ft_interpolate(t0, {k: v for k, v in t1.items() if k != "bias"}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        wise_ft_interpolate(t0, t1, 1.5)


def test_sweep_picks_the_best_alpha_and_reports_the_curve() -> None:
    model = nn.Linear(1, 1, bias=False)
    before = model.weight.detach().clone()
    t0, t1 = {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}

    def score(m: nn.Module) -> dict[str, float]:
        w = float(m.weight.detach())  # type: ignore[operator]
        return {"ood_val/accuracy": -((w - 0.3) ** 2)}

    sweep = wise_ft_sweep(model, t0, t1, DEFAULT_ALPHAS, score, "ood_val/accuracy")
    assert sweep.alpha == pytest.approx(0.3)
    assert [row["alpha"] for row in sweep.curve] == list(DEFAULT_ALPHAS)
    assert torch.allclose(sweep.state["weight"], torch.tensor([[0.3]]))
    assert torch.equal(model.weight.detach(), before)  # the model passed in is not modified
    flat = wise_ft_sweep(model, t0, t1, [1.0, 0.5, 0.0], lambda m: {"s": 1.0}, "s")
    assert flat.alpha == 0.0  # ties go to the smaller alpha


def test_wise_ft_on_top_of_ft_interpolates_the_backbone_and_keeps_the_trained_head(
    prepared: PreparedTask,
) -> None:
    kw = dict(steps=4, lr=1e-2)
    plain = run(create_method("ft"), prepared, **kw).model.state_dict()
    result = run(create_method("wise_ft", {"alphas": [0.0, 0.5, 1.0]}), prepared, **kw)
    info = result.info
    alpha = info["wise_ft/alpha"]
    assert alpha in (0.0, 0.5, 1.0) and [r["alpha"] for r in info["wise_ft/curve"]] == [0.0, 0.5, 1.0]
    assert {"id_val/accuracy", "ood_val/accuracy"} <= set(info["wise_ft/curve"][0])
    best = max(info["wise_ft/curve"], key=lambda r: r["ood_val/accuracy"])["ood_val/accuracy"]
    assert result.metrics["ood_val/accuracy"] == pytest.approx(best)
    theta0 = build_model(prepared, "random", 0, torch.device("cpu")).state_dict()
    backbone = [k for k in plain if k.startswith("backbone.")]
    expected = wise_ft_interpolate(theta0, plain, alpha, keys=backbone)
    got = result.model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert torch.equal(got["head.weight"], plain["head.weight"])
    assert info["wise_ft/interpolated_head"] is False


def test_wise_ft_on_lp_ft_interpolates_the_head_too(prepared: PreparedTask) -> None:
    method = create_method("wise_ft", {"base": "lp_ft", "alphas": [0.0]})
    result = run(method, prepared, steps=2, lr=1e-2)
    assert result.info["wise_ft/interpolated_head"] is True
    start = build_model(prepared, "lp", 0, torch.device("cpu")).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in result.model.state_dict().items())  # α = 0 is θ0


def test_wise_ft_validates_its_base() -> None:
    with pytest.raises(InvalidSpec) as e:
        create_method("wise_ft", {"base": "wise_ft"}, field="final.baselines.1")
    assert e.value.field == "final.baselines.1.params.base"
    with pytest.raises(InvalidSpec) as e:
        create_method("wise_ft", {"base": "spd", "base_params": {"strength": -1}}, field="m")
    assert e.value.field == "m.params.base_params.strength"
