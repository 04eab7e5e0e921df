"""The task contract, checked on every registered task (built-in and ``autoft.tasks`` entry points).

Each task is created from its example parameters on tiny generated data, refuses bad parameters with an
``InvalidSpec`` naming the parameter, prepares, loads the same data twice, and yields splits, features,
training batches and a starting head whose shapes agree. A new task gets these tests the moment it is
registered, from the parameters its class's ``example_params(root)`` writes tiny data for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from autoft_service.errors import InvalidSpec
from workers.accel import Accel, train_batches
from workers.metrics import METRICS
from workers.prepared import prepared_task
from workers.tasks import Task, TaskData, list_tasks, resolve_task

CPU = torch.device("cpu")


TASK_NAMES = list_tasks()


class Case:
    """One task, created from its example: the class, the raw parameters and the task's cache dir."""

    def __init__(self, name: str, root: Path, cache_dir: Path) -> None:
        self.name, self.cls, self.cache_dir = name, resolve_task(name), cache_dir
        self.roots = (root,)  # tasks that read files confine them to the data roots
        try:
            self.params = self.cls.example_params(root)
        except NotImplementedError:
            pytest.fail(f"task {name!r} has no example parameters: give its class an example_params(root)")

    def create(self, **changes: Any) -> Task:
        return self.cls.create({**self.params, **changes}, self.cache_dir, data_roots=self.roots)


@pytest.fixture(scope="module", params=TASK_NAMES)
def case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, task_cache: Path
) -> Iterator[Case]:
    yield Case(request.param, tmp_path_factory.mktemp(f"data-{request.param}"), task_cache)


@pytest.fixture(scope="module")
def loaded(case: Case) -> tuple[Task, TaskData]:
    task = case.create()
    task.prepare()
    return task, task.load()


def test_registered_tasks_include_the_built_ins() -> None:
    assert {"digits-shift", "image-classification"} <= set(TASK_NAMES)


def test_created_from_its_example(case: Case) -> None:
    task = case.create()
    assert isinstance(task, Task) and case.cls.name == case.name
    assert case.cls.summary, "a task describes itself in the catalog"
    assert isinstance(task.params, case.cls.Params)
    assert case.cls.metrics and set(case.cls.metrics) <= set(METRICS.names())


def test_unknown_parameter_is_refused_naming_it(case: Case) -> None:
    with pytest.raises(InvalidSpec) as e:
        case.create(no_such_param=1)
    assert e.value.field == "task.params.no_such_param"


def test_bad_values_are_refused_naming_the_parameter(case: Case) -> None:
    scalars = [k for k, v in case.params.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    assert scalars, "the example should set at least one scalar parameter"
    for key in scalars:
        with pytest.raises(InvalidSpec) as e:
            case.create(**{key: {"not": "a scalar"}})
        assert e.value.field is not None and e.value.field.startswith(f"task.params.{key}"), (key, e.value)


def test_missing_required_parameters_are_named(case: Case) -> None:
    params: type[BaseModel] = case.cls.Params
    for key in [k for k, f in params.model_fields.items() if f.is_required()]:
        raw = {k: v for k, v in case.params.items() if k != key}
        with pytest.raises(InvalidSpec) as e:
            case.cls.create(raw, case.cache_dir, data_roots=case.roots)
        assert e.value.field == f"task.params.{key}"


def test_splits_have_consistent_shapes(loaded: tuple[Task, TaskData]) -> None:
    _, data = loaded
    assert data.num_classes >= 2 and data.feature_dim >= 1
    splits = {"id_train": data.id_train, **data.splits()}
    assert set(splits) >= {"id_train", "id_val", "ood_val", "id_test"}
    shape, dtype = data.id_train.x.shape[1:], data.id_train.x.dtype
    for name, s in splits.items():
        assert len(s) > 0, name
        assert s.x.shape[1:] == shape and s.x.dtype == dtype, name
        assert s.y.dtype == torch.int64 and s.y.ndim == 1, name
        assert int(s.y.min()) >= 0 and int(s.y.max()) < data.num_classes, name
        assert s.groups is None or len(s.groups) == len(s), name
    assert all(name and "/" not in name and name != "mean" for name in data.ood_tests)
    if data.class_names is not None:
        assert len(data.class_names) == data.num_classes


def test_backbone_maps_inputs_to_features(loaded: tuple[Task, TaskData]) -> None:
    _, data = loaded
    x = data.id_train.x[:4]
    with torch.no_grad():
        feats = data.backbone.eval()(x)
    assert feats.shape == (len(x), data.feature_dim) and torch.isfinite(feats).all()
    if data.init_head is not None:
        assert (data.init_head.in_features, data.init_head.out_features) == (data.feature_dim, data.num_classes)


def test_text_tower_matches_the_declared_capability(case: Case, loaded: tuple[Task, TaskData]) -> None:
    task, data = loaded
    if case.cls.supports_text_tower(task.params):
        assert data.class_text_tokens is not None and data.class_text_tokens.shape[0] == data.num_classes
    else:
        assert data.class_text_tokens is None


def test_load_is_repeatable(loaded: tuple[Task, TaskData]) -> None:
    task, data = loaded
    again = task.load()
    for name, s in data.splits().items():
        t = again.splits()[name]
        assert torch.equal(s.y, t.y) and torch.equal(s.x, t.x), name
    assert torch.equal(data.id_train.y, again.id_train.y)


def test_prepared_task_yields_batches_features_and_a_head(case: Case, loaded: tuple[Task, TaskData]) -> None:
    _, data = loaded
    prepared = prepared_task(case.name, case.params, case.cache_dir, CPU, data_roots=case.roots)
    head = prepared.lp_head
    assert (head.in_features, head.out_features) == (data.feature_dim, data.num_classes)
    split = prepared.data.id_train
    idx = torch.arange(min(4, len(split)))
    x, y = next(train_batches(split, iter([idx]), Accel.for_run(CPU)))
    assert x.shape == (len(idx), *split.x.shape[1:]) and y.shape == (len(idx),)
    with torch.no_grad():
        logits = head(prepared.data.backbone.eval()(x))
    assert logits.shape == (len(idx), data.num_classes)
