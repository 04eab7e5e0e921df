"""Spec validation: every bad input names its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoft_service.errors import InvalidSpec, UnknownLossTerm, UnknownTask
from autoft_service.spec import load_spec_file, parse_spec
from tests.conftest import small_spec


def _err(data: Any) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        parse_spec(data)
    return e.value


def test_demo_spec_is_valid() -> None:
    from autoft_service.cli import demo_spec_path

    spec = load_spec_file(demo_spec_path())
    assert spec.search.fixed_weights == {"ce": 1.0}
    assert spec.budget.early_stopping.type == "asha"


def test_unknown_loss_term_names_the_index() -> None:
    data = small_spec(search={"loss_terms": ["ce", "hingee"]})
    e = _err(data)
    assert isinstance(e, UnknownLossTerm)
    assert e.field == "search.loss_terms.1" and "hinge" in e.message  # lists the valid names


def test_low_not_below_high() -> None:
    e = _err(small_spec(search={"weight_range": [1.0, 0.1]}))
    assert e.field == "search.weight_range" and "must be <" in e.message
    e = _err(small_spec(search={"weight_decay": [0.5, 0.5]}))
    assert e.field == "search.weight_decay"
    e = _err(small_spec(search={"lr": {"base": 1e-3, "relative_range": [10, 1]}}))
    assert e.field == "search.lr"


def test_unknown_task_and_bad_task_params() -> None:
    e = _err(small_spec(task={"name": "imagenet-9000"}))
    assert isinstance(e, UnknownTask) and e.field == "task.name"
    e = _err(small_spec(task={"name": "digits-shift", "params": {"shots_per_class": 0}}))
    assert e.field == "task.params.shots_per_class"
    e = _err(small_spec(task={"name": "digits-shift", "params": {"ood_test_shifts": ["fog"]}}))
    assert e.field.startswith("task.params.ood_test_shifts")


def test_budget_checks() -> None:
    base = small_spec()["budget"]
    e = _err(small_spec(budget={**base, "eval_every": 100}))
    assert e.field == "budget" and "eval_every" in e.message
    e = _err(small_spec(budget={**base, "trials": 0}))
    assert e.field == "budget.trials"
    e = _err(small_spec(budget={**base, "max_concurrent": "two"}))
    assert e.field == "budget.max_concurrent"


def test_unknown_keys_and_wrong_types() -> None:
    e = _err(small_spec(surprise=1))
    assert e.field == "surprise"
    e = _err(small_spec(name="bad name!"))
    assert e.field == "name"
    e = _err(small_spec(objective={"metric": "ood_val/auc"}))
    assert e.field == "objective.metric" and "accuracy" in e.message
    e = _err(small_spec(objective={"metric": "test/accuracy"}))
    assert e.field == "objective.metric"
    e = _err([1, 2])
    assert "mapping" in e.message
    e = _err(small_spec(final={"baselines": ["ft", "ft"]}))
    assert e.field == "final.baselines"


def test_all_errors_are_listed() -> None:
    e = _err({"name": "x", "task": {"name": "digits-shift"}, "budget": {"trials": -1, "batch_size": 0}})
    fields = {d["field"] for d in e.details}
    assert {"budget.trials", "budget.batch_size"} <= fields


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_spec_file(bad)


def test_module_attribute_task_reference() -> None:
    spec = parse_spec(small_spec(task={"name": "workers.tasks.digits:DigitsShiftTask"}))
    assert spec.task.name.endswith(":DigitsShiftTask")
    e = _err(small_spec(task={"name": "workers.tasks.digits:load_digit_images"}))
    assert "not a Task subclass" in e.message


def test_baselines_resolve_through_the_method_registry() -> None:
    spec = parse_spec(
        small_spec(
            final={"baselines": ["ft", {"name": "spd", "params": {"strength": 0.5}, "label": "spd-half"}]}
        )
    )
    assert [b.row for b in spec.final.baselines] == ["ft", "spd-half"]
    e = _err(small_spec(final={"baselines": ["ft", "sgd-magic"]}))
    assert e.field == "final.baselines.1" and "l2_sp" in e.message
    e = _err(small_spec(final={"baselines": [{"name": "spd", "params": {"strength": -1}}]}))
    assert e.field.startswith("final.baselines.0.params.strength")
    e = _err(small_spec(final={"baselines": ["flyp"]}))  # the demo CNN has no text tower
    assert e.field == "final.baselines.0" and "text tower" in e.message
    e = _err(small_spec(final={"baselines": ["spd", {"name": "spd"}]}))
    assert e.field == "final.baselines" and "label" in e.message


def test_booleans_are_not_seeds() -> None:
    e = _err(small_spec(final={"reevaluate": {"top_k": 1, "seeds": [False]}}))
    assert e.field == "final.reevaluate.seeds.0"


def test_text_tower_terms_need_a_dual_encoder_task() -> None:
    spec = small_spec()
    spec["search"]["loss_terms"] = ["ce", "hinge", "flyp"]
    with pytest.raises(InvalidSpec) as e:
        parse_spec(spec)
    assert e.value.field == "search.loss_terms.2" and "text tower" in str(e.value)
    spec = small_spec()
    spec["search"]["fixed_weights"] = {"ce": 1.0, "flyp": 0.5}
    with pytest.raises(InvalidSpec) as e:
        parse_spec(spec)
    assert e.value.field == "search.fixed_weights.flyp"


def test_precision_is_validated() -> None:
    assert parse_spec(small_spec(resources={"precision": "bf16"})).resources.precision == "bf16"
    with pytest.raises(InvalidSpec) as e:
        parse_spec(small_spec(resources={"precision": "fp16"}))
    assert e.value.field == "resources.precision"
