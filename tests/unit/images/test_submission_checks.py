"""What a spec may name is checked at submission (``validate_spec``, i.e. the 422 of ``POST /v1/jobs``):
free-form model arguments never name a file, and no manifest row, symlink or model file leads outside the
data roots. A path outside the roots gets the same message whether it exists, is unreadable or is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from autoft_service.errors import InvalidSpec
from autoft_service.spec import parse_spec
from tests.conftest import small_spec
from workers.images.synthetic_data import make_image_folder, make_manifest
from workers.images.tiny_models import save_tiny_hf, save_tiny_timm

CLASSES = ["a", "b"]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A data root with a timm model and one ImageFolder, and a folder outside it with a secret file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    save_tiny_timm(root / "m")
    make_image_folder(root / "train", CLASSES, 2, seed=0)
    outside.mkdir()
    (outside / "secret.pth").write_bytes(b"not for you")
    locked = outside / "locked"
    locked.mkdir()
    (locked / "x.pth").write_bytes(b"")
    locked.chmod(0)
    yield root, outside
    locked.chmod(0o755)


def image_spec(model: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    here = {"format": "imagefolder", "path": "train"}
    sources = {"id_train": here, "id_test": here, "ood_val": here, **data}
    params = {"model": model or {"family": "timm", "path": "m"}, "data": sources}
    return small_spec(task={"name": "image-classification", "params": params})


def refused(spec: dict[str, Any], root: Path) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        parse_spec(spec, data_roots=[root])
    return e.value


def test_the_valid_layout_is_accepted(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    parse_spec(image_spec(), data_roots=[root])
    ok = {"family": "timm", "path": "m", "model_args": {"drop_path_rate": 0.1, "global_pool": "avg"}}
    parse_spec(image_spec(ok), data_roots=[root])  # architecture options stay allowed


@pytest.mark.parametrize(
    ("model_args", "where"),
    [
        ({"checkpoint_path": "{outside}/secret.pth"}, "checkpoint_path"),
        (
            {"checkpoint_path": "m/model.safetensors"},
            "checkpoint_path",
        ),  # even inside: weights come from path
        ({"pretrained_cfg_overlay": {"file": "{outside}/secret.pth"}}, "pretrained_cfg_overlay"),
        ({"pretrained": True}, "pretrained"),
        ({"block_args": {"extra": ["{outside}/secret.pth"]}}, "block_args.extra.0"),
        ({"anything": "../../etc/passwd"}, "anything"),
    ],
)
def test_model_args_never_name_a_file(
    layout: tuple[Path, Path], model_args: dict[str, Any], where: str
) -> None:
    root, outside = layout
    args = json.loads(json.dumps(model_args).replace("{outside}", str(outside)))
    err = refused(image_spec({"family": "timm", "path": "m", "model_args": args}), root)
    assert err.field == f"task.params.model.model_args.{where}"
    assert "may not name files" in err.message


def test_model_args_give_no_existence_oracle(layout: tuple[Path, Path]) -> None:
    """Existing, missing and unreadable files outside the roots: one message, nothing opened."""
    root, outside = layout
    messages = set()
    for target in (outside / "secret.pth", outside / "missing.pth", outside / "locked" / "x.pth"):
        spec = image_spec({"family": "timm", "path": "m", "model_args": {"checkpoint_path": str(target)}})
        messages.add(refused(spec, root).message)
    assert len(messages) == 1


def test_a_model_folders_config_cannot_name_a_file_either(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    cfg_file = root / "m" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_args"] = {**cfg.get("model_args", {}), "checkpoint_path": str(outside / "secret.pth")}
    cfg_file.write_text(json.dumps(cfg))
    err = refused(image_spec(), root)
    assert err.field == "task.params.model.path" and "config.json model_args.checkpoint_path" in err.message


def test_a_symlink_in_the_model_folder_leading_outside_is_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "m" / "extra.bin").symlink_to(outside / "secret.pth")
    err = refused(image_spec(), root)
    assert err.field == "task.params.model.path" and "outside the data roots" in err.message


def test_a_sharded_checkpoint_index_cannot_point_outside(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    save_tiny_hf(root / "hf")
    parse_spec(image_spec({"family": "hf", "path": "hf"}), data_roots=[root])
    index = {"metadata": {}, "weight_map": {"w": os.path.relpath(outside / "secret.pth", root / "hf")}}
    (root / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    err = refused(image_spec({"family": "hf", "path": "hf"}), root)
    assert err.field == "task.params.model.path" and "outside the data roots" in err.message
    (root / "hf" / "model.safetensors.index.json").unlink()
    (root / "hf" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(outside)}))
    err = refused(image_spec({"family": "hf", "path": "hf"}), root)  # it would load the base model it names
    assert err.field == "task.params.model.path" and "adapter_config.json" in err.message


def test_manifest_rows_outside_the_roots_are_refused_at_submission(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    make_manifest(root / "ood.csv", root / "ood", CLASSES, 4, seed=1)
    ood = {"format": "csv", "path": "ood.csv"}
    parse_spec(image_spec(ood_val=ood), data_roots=[root])
    messages = []
    for target in (outside / "secret.pth", outside / "missing.png", outside / "locked" / "x.pth"):
        rows = (root / "ood.csv").read_text().splitlines()
        (root / "bad.csv").write_text("\n".join([*rows, f"{target},a"]) + "\n")
        err = refused(image_spec(ood_val={"format": "csv", "path": "bad.csv"}), root)
        assert err.field == "task.params.data.ood_val.path" and "outside the data roots" in err.message
        assert f"row {len(rows)}" in err.message
        messages.append(err.message.replace(str(target), "<target>"))
    assert len(set(messages)) == 1  # existing, missing, unreadable: the same answer
    rows = (root / "ood.csv").read_text().splitlines()
    (root / "rel.csv").write_text("\n".join([*rows, "../../outside/secret.pth,a"]) + "\n")
    err = refused(image_spec(ood_val={"format": "csv", "path": "rel.csv"}), root)
    assert err.field == "task.params.data.ood_val.path"


def test_a_manifest_row_through_a_symlinked_folder_is_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    make_image_folder(outside / "imgs", CLASSES, 1, seed=2)
    (root / "linked").symlink_to(outside / "imgs")
    (root / "m.csv").write_text(
        "path,label\nlinked/a/0.png,a\ntrain/b/" + _first(root / "train" / "b") + ",b\n"
    )
    err = refused(image_spec(ood_val={"format": "csv", "path": "m.csv"}), root)
    assert err.field == "task.params.data.ood_val.path" and "row 1" in err.message


def test_an_image_root_outside_the_roots_is_refused_at_submission(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    make_manifest(root / "ood.csv", root / "ood", CLASSES, 4, seed=1)
    err = refused(image_spec(ood_val={"format": "csv", "path": "ood.csv", "image_root": str(outside)}), root)
    assert err.field == "task.params.data.ood_val.image_root" and "outside the data roots" in err.message


@pytest.mark.parametrize("what", ["class folder", "image", "nested folder"])
def test_symlinks_in_an_image_folder_leading_outside_are_refused(
    layout: tuple[Path, Path], what: str
) -> None:
    root, outside = layout
    make_image_folder(outside / "imgs", CLASSES, 1, seed=2)
    if what == "class folder":
        (root / "train" / "c").symlink_to(outside / "imgs" / "a")
    elif what == "image":
        (root / "train" / "a" / "stolen.png").symlink_to(
            outside / "imgs" / "a" / _first(outside / "imgs" / "a")
        )
    else:
        (root / "train" / "a" / "deep").mkdir()
        (root / "train" / "a" / "deep" / "x.png").symlink_to(outside / "missing.png")  # dangling: same answer
    err = refused(image_spec(), root)
    assert err.field == "task.params.data.id_train.path" and "outside the data roots" in err.message


def test_symlinks_inside_the_roots_are_fine(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "alias").symlink_to(root / "train")
    (root / "train" / "a" / "again.png").symlink_to(root / "train" / "a" / _first(root / "train" / "a"))
    parse_spec(image_spec(id_test={"format": "imagefolder", "path": "alias"}), data_roots=[root])


def _first(folder: Path) -> str:
    return sorted(p.name for p in folder.iterdir())[0]


def test_an_open_clip_folders_config_cannot_name_a_file(tmp_path: Path) -> None:
    from workers.images.tiny_models import save_tiny_open_clip

    root = tmp_path / "root"
    save_tiny_open_clip(root / "clip")
    make_image_folder(root / "train", CLASSES, 2, seed=0)
    clip = {"family": "open_clip", "path": "clip", "templates": ["a photo of a {}."]}
    parse_spec(image_spec(clip), data_roots=[root])
    cfg_file = root / "clip" / "open_clip_config.json"
    raw = json.loads(cfg_file.read_text())
    cfg = raw.get("model_cfg", raw)
    cfg["vision_cfg"]["timm_model_pretrained"] = True
    cfg_file.write_text(json.dumps(raw))
    err = refused(image_spec(clip), root)
    assert err.field == "task.params.model.path" and "timm_model_pretrained" in err.message
