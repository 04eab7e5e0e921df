"""``autoft submit --set PATH=VALUE``: dotted paths into the spec, YAML values, validated like the spec."""

from __future__ import annotations

import pytest

from autoft_service.errors import InvalidSpec
from autoft_service.overrides import apply_overrides

BASE = {"name": "t1", "task": {"name": "digits-shift"}, "budget": {"trials": 24, "inner_steps": 40}}


def test_values_are_yaml_and_paths_are_dotted() -> None:
    out = apply_overrides(
        BASE,
        ["budget.trials=6", "search.sampler.seed=3", "final.baselines=[ft, lp]", "task.params.shots_per_class=5",
         "objective.mode=min", "name=renamed"],
    )  # fmt: skip
    assert out["budget"] == {"trials": 6, "inner_steps": 40}  # siblings kept
    assert out["search"] == {"sampler": {"seed": 3}}
    assert out["final"]["baselines"] == ["ft", "lp"] and out["task"]["params"] == {"shots_per_class": 5}
    assert (out["objective"]["mode"], out["name"]) == ("min", "renamed")
    assert BASE["budget"]["trials"] == 24  # the input is not changed


def test_later_overrides_win() -> None:
    assert apply_overrides(BASE, ["budget.trials=6", "budget.trials=8"])["budget"]["trials"] == 8


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ("budget.trails=6", "budget.trails", "unknown spec field 'budget.trails'"),
        ("colour=red", "colour", "unknown spec field 'colour'"),
        ("budget.trials.x=1", "budget.trials.x", "is a value"),
        ("budget.trials", "--set", "PATH=VALUE"),
        ("=6", "--set", "PATH=VALUE"),
        ("budget..trials=6", "--set", "PATH=VALUE"),
        ("budget.trials='6'", "budget.trials", "valid integer"),  # a string, as YAML reads it
        ("budget.trials=true", "budget.trials", "valid integer"),
        ("budget.trials=0", "budget.trials", "greater than or equal to 1"),
        ("budget.trials=[1", "budget.trials", "not valid YAML"),
        ("name.first=x", "name.first", "is a value"),
    ],
)
def test_bad_overrides_name_the_field(item: str, field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        apply_overrides(BASE, [item])
    assert e.value.field == field and words in e.value.message, e.value.message


def test_an_override_through_a_non_mapping_is_refused() -> None:
    with pytest.raises(InvalidSpec) as e:
        apply_overrides({**BASE, "budget": 5}, ["budget.trials=6"])
    assert e.value.field == "budget"
