"""The ``image-classification`` task without Ray: parameters, splits, starting heads, the CLIP text side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from autoft_service.errors import InvalidSpec
from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.images.synthetic_data import make_image_folder, make_manifest
from workers.images.task import ImageClassificationTask
from workers.images.tiny_models import save_tiny_open_clip, save_tiny_timm
from workers.prepared import prepared_task
from workers.trial_config import TrialConfig

CLASSES = ["a", "b", "c"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    r = tmp_path_factory.mktemp("root")
    save_tiny_timm(r / "timm")
    save_tiny_open_clip(r / "clip")
    make_image_folder(r / "train", CLASSES, 10, seed=1)
    make_image_folder(r / "test", CLASSES, 4, seed=2)
    make_manifest(r / "ood.csv", r / "ood", CLASSES, 9, shift="noise", groups=True, seed=3)
    yield r


def params(model: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "model": model,
        "data": {
            "id_train": {"format": "imagefolder", "path": "train"},
            "id_test": {"format": "imagefolder", "path": "test"},
            "ood_val": {"format": "csv", "path": "ood.csv", "group_column": "group"},
            "ood_tests": {"noise": {"format": "csv", "path": "ood.csv"}},
        },
        "id_val_size": 6,
        **kw,
    }


TIMM = {"family": "timm", "path": "timm"}
CLIP = {"family": "open_clip", "path": "clip", "templates": ["a photo of a {}."]}


def test_splits_hold_out_id_val_and_subsample_ood_val(root: Path, tmp_path: Path) -> None:
    task = ImageClassificationTask.create(params(TIMM, ood_val_size=6), tmp_path, data_roots=[root])
    data = task.load()
    assert data.class_names == CLASSES and data.num_classes == 3
    assert len(data.id_val) == 6 and len(data.id_train) == 24  # 30 - 6, class-balanced hold-out
    assert torch.bincount(data.id_val.y).tolist() == [2, 2, 2]
    assert len(data.ood_val) == 6 and torch.bincount(data.ood_val.y).tolist() == [2, 2, 2]
    assert data.ood_val.groups is not None and data.ood_tests["noise"].groups is None
    assert data.id_train.x.dtype == torch.uint8 and data.id_train.x.shape[1:] == (3, 32, 32)
    assert data.init_head is None and data.class_text_tokens is None  # timm: the LP head is fitted later
    # the same spec again reads the decoded cache, not the images
    again = ImageClassificationTask.create(params(TIMM, ood_val_size=6), tmp_path, data_roots=[root]).load()
    assert torch.equal(again.id_train.x, data.id_train.x) and torch.equal(again.ood_val.y, data.ood_val.y)


def test_clip_starts_from_its_zero_shot_head(root: Path, tmp_path: Path) -> None:
    assert ImageClassificationTask.supports_text_tower(ImageClassificationTask.validate_params(params(CLIP), data_roots=[root]))
    assert not ImageClassificationTask.supports_text_tower(
        ImageClassificationTask.validate_params(params(TIMM), data_roots=[root])
    )
    prepared = prepared_task("image-classification", params(CLIP), tmp_path, data_roots=[root])
    data = prepared.data
    assert data.init_head is not None and prepared.lp_head is data.init_head
    assert data.class_text_tokens is not None and data.class_text_tokens.shape == (3, 77)
    lp = prepared_task("image-classification", params(CLIP, head_init="lp"), tmp_path, data_roots=[root])
    assert lp.data.init_head is None and not torch.equal(lp.lp_head.weight, prepared.lp_head.weight)


def test_flyp_term_trains_the_text_tower(root: Path, tmp_path: Path) -> None:
    prepared = prepared_task("image-classification", params(CLIP), tmp_path, data_roots=[root])
    before = [p.detach().clone() for p in prepared.data.backbone.text_parameters()]  # type: ignore[operator]
    seen: list[dict[str, float]] = []
    model = run_objective(
        prepared, TrialConfig({"ce": 1.0, "flyp": 1.0}, 1e-3, 0.0, 0), RunBudget(2, 8, eval_every=2),
        accel=Accel(CPU), on_eval=lambda s, m: seen.append(m), final_eval=False,
    ).model  # fmt: skip
    after = list(model.backbone.text_parameters())  # type: ignore[operator]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert seen[-1]["train/loss/flyp"] > 0
    # without the term the text tower stays frozen and untouched
    model = run_objective(
        prepared, TrialConfig({"ce": 1.0}, 1e-3, 0.0, 0), RunBudget(2, 8), accel=Accel(CPU), final_eval=False
    ).model
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.text_parameters(), before, strict=True))  # type: ignore[operator]


def test_bad_params_name_their_field(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(params(TIMM, head_init="zeroshot"), data_roots=[root])
    assert "open_clip" in str(e.value)
    bad = params(TIMM)
    bad["data"]["ood_tests"] = {"mean": {"format": "imagefolder", "path": "test"}}
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(bad, data_roots=[root])
    assert e.value.field.startswith("task.params.data.ood_tests")
    bad = params(TIMM)
    bad["data"]["id_test"] = {"format": "imagefolder", "path": "../../etc"}
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(bad, data_roots=[root])
    assert e.value.field == "task.params.data.id_test.path" and "outside the data roots" in str(e.value)
    with pytest.raises(InvalidSpec) as e:  # an unknown label in a split is found when the task loads
        make_image_folder(root / "other", ["a", "zebra"], 2, seed=0)
        p = params(TIMM)
        p["data"]["id_test"] = {"format": "imagefolder", "path": "other"}
        ImageClassificationTask.create(p, tmp_path, data_roots=[root]).load()
    assert e.value.field.startswith("task.params.data.id_test")


def test_zero_shot_head_is_computed_once_per_machine(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.images import model_adapters

    calls = {"n": 0}
    real = model_adapters.LoadedModel.zero_shot_weights

    def counting(self: Any, names: Any) -> Any:
        calls["n"] += 1
        return real(self, names)

    monkeypatch.setattr(model_adapters.LoadedModel, "zero_shot_weights", counting)
    first = ImageClassificationTask.create(params(CLIP), tmp_path, data_roots=[root]).load().init_head
    second = ImageClassificationTask.create(params(CLIP), tmp_path, data_roots=[root]).load().init_head
    assert calls["n"] == 1 and first is not None and second is not None
    assert torch.equal(first.weight, second.weight)
    other = (
        ImageClassificationTask.create(params({**CLIP, "templates": ["art of {}."]}), tmp_path, data_roots=[root])
        .load()
        .init_head
    )
    assert calls["n"] == 2 and other is not None and not torch.equal(other.weight, first.weight)


def test_the_worker_context_carries_the_data_roots(root: Path, tmp_path: Path) -> None:
    from workers.contexts import WorkerContext

    ctx = WorkerContext(task_name="image-classification", task_params=params(TIMM), cache_dir=str(tmp_path))
    with pytest.raises(InvalidSpec, match="no data roots are configured"):
        ctx.start()  # a worker reads no environment: without roots in its context it reads nothing
    _, prepared = ctx.model_copy(update={"data_roots": (str(root),)}).start()
    assert prepared.data.num_classes == 3
