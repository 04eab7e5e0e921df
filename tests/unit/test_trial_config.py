"""TrialConfig owns the flat ``/``-keyed trial hyperparameters: flat and nested in, flat out, round trip."""

from __future__ import annotations

import pytest

from workers.trial_config import PLAIN_ADAMW, TrialConfig, flatten_config

FLAT = {"loss/ce/weight": 1.0, "loss/hinge/weight": 0.5, "optim/lr": 0.1, "optim/weight_decay": 0.2,
        "train/seed": 3}  # fmt: skip


def test_reads_nested_and_flat() -> None:
    nested = {"loss": {"ce": {"weight": 1.0}, "hinge": {"weight": 0.5}}, "optim": {"lr": 0.1, "weight_decay": 0.2},
              "train": {"seed": 3}}  # fmt: skip
    expected = TrialConfig({"ce": 1.0, "hinge": 0.5}, 0.1, 0.2, 3)
    assert TrialConfig.from_flat(nested) == TrialConfig.from_flat(FLAT) == expected
    assert flatten_config(nested) == FLAT
    assert expected.ft_method is None and expected.to_flat() == FLAT


def test_method_params_nest_dotted_keys_and_round_trip() -> None:
    flat = {**FLAT, "method/name": "layerwise", "method/layerwise/lr_multipliers.group0": 0.5,
            "method/layerwise/lr_multipliers.group1": 2.0, "method/layerwise/depth": 3,
            "method/spd/strength": 1.0}  # fmt: skip
    config = TrialConfig.from_flat(flat)
    assert config.ft_method == "layerwise"
    assert config.method_params == {"lr_multipliers": {"group0": 0.5, "group1": 2.0}, "depth": 3}
    assert config.to_flat() == {k: v for k, v in flat.items() if not k.startswith("method/spd/")}
    assert TrialConfig.from_flat(config.to_flat()) == config


def test_the_plain_adamw_choice_is_no_method() -> None:
    config = TrialConfig.from_flat({**FLAT, "method/name": PLAIN_ADAMW})
    assert config.method == PLAIN_ADAMW and config.ft_method is None and config.method_params == {}
    assert config.to_flat()["method/name"] == PLAIN_ADAMW
    assert config.with_seed(9).seed == 9 and config.with_seed(9).loss_weights == config.loss_weights


def test_a_missing_key_is_an_error() -> None:
    with pytest.raises(KeyError):
        TrialConfig.from_flat({"loss/ce/weight": 1.0})
