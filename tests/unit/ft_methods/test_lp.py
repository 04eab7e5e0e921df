"""LP trains only the head; FT through the method loop is the existing objective loop, bit for bit."""

from __future__ import annotations

import torch

from tests.unit.ft_methods.helpers import CPU, run
from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.ft_methods import create_method
from workers.prepared import PreparedTask, build_model
from workers.trial_config import TrialConfig


def test_lp_trains_only_the_head(prepared: PreparedTask) -> None:
    result = run(create_method("lp"), prepared, steps=3, lr=1e-2)
    pretrained = prepared.data.backbone.state_dict()
    trained = result.model.backbone.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in pretrained.items())
    start = build_model(prepared, "random", 0, CPU)
    assert not torch.equal(result.model.head.weight.detach(), start.head.weight.detach())
    assert [g["name"] for g in result.info["optimizer"]["groups"]] == ["head"]


def test_lp_ft_starts_from_the_probe_head(prepared: PreparedTask) -> None:
    result = run(create_method("lp_ft"), prepared, steps=0)
    assert torch.equal(result.model.head.weight, prepared.lp_head.weight)


def test_ft_matches_the_objective_loop(prepared: PreparedTask) -> None:
    result = run(create_method("ft"), prepared, steps=3, lr=3e-3, weight_decay=0.1, seed=5)
    reference = run_objective(
        prepared, TrialConfig({"ce": 1.0}, 3e-3, 0.1, 5), RunBudget(3, 16), accel=Accel(CPU), head="random"
    )
    ref = reference.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in result.model.state_dict().items())
