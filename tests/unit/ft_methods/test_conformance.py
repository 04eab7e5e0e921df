"""Conformance suite over every registered fine-tuning method, plus the registry's contract."""

from __future__ import annotations

import math

import pytest
import torch

from autoft_service.errors import DuplicateRegistration, InvalidSpec
from tests.unit.ft_methods.helpers import run
from workers.ft_methods import FT_METHODS, FTMethod, UnknownFTMethod, create_method, register_ft_method
from workers.prepared import PreparedTask


@pytest.mark.parametrize("name", FT_METHODS.names())
def test_method_contract(name: str) -> None:
    cls = FT_METHODS.get(name)
    method = create_method(name)
    assert isinstance(method, FTMethod) and method.name == name == cls.name
    assert cls.summary and cls.paper
    with pytest.raises(InvalidSpec) as e:
        create_method(name, {"no_such_param": 1}, field="final.baselines.0")
    assert e.value.field == "final.baselines.0.params.no_such_param"
    for key, r in method.search_space().items():
        assert r.low <= r.high, key
        assert not r.log or r.low > 0, key
        if key in cls.Params.model_fields:
            assert r.low <= getattr(method.params, key) <= r.high, f"{name}.{key} default outside its range"


@pytest.mark.parametrize("name", FT_METHODS.names())
def test_every_method_trains_on_the_demo_task(name: str, prepared: PreparedTask) -> None:
    method = create_method(name)
    pretrained = {k: v.clone() for k, v in prepared.data.backbone.state_dict().items()}
    if method.requires_text_tower:
        with pytest.raises(InvalidSpec) as e:
            run(method, prepared)
        assert e.value.field == "final.baselines"
        return
    result = run(method, prepared)
    m = result.metrics
    expected = [
        "id_val/accuracy",
        "ood_val/accuracy",
        "id_test/accuracy",
        "ood_test/mean/accuracy",
        "train/loss",
    ]
    expected += [f"ood_test/{s}/accuracy" for s in prepared.data.ood_tests]
    for key in expected:
        assert key in m and math.isfinite(m[key]), f"{name}: {key} missing or not finite"
    assert result.info["method"] == name and result.info["optimizer"]["groups"]
    # the task's shared pretrained backbone is never modified, and no hook outlives the run
    assert all(torch.equal(v, prepared.data.backbone.state_dict()[k]) for k, v in pretrained.items())
    assert not any(mod._forward_hooks for mod in result.model.modules())
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_duplicate_registration_raises() -> None:
    before = FT_METHODS.get("ft")
    with pytest.raises(DuplicateRegistration):

        @register_ft_method("ft")
        class Impostor(FTMethod):
            summary = "x"

    assert FT_METHODS.get("ft") is before


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownFTMethod) as e:
        create_method("nope", field="final.baselines.2")
    assert e.value.field == "final.baselines.2"
    assert "lp_ft" in e.value.message and "spd" in e.value.message
