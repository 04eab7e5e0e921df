"""Model adapters: tiny randomly initialised models of each family, saved and loaded back, offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from autoft_service.errors import InvalidSpec
from workers.images.model_adapters import (
    ClipBackbone,
    HFModel,
    OpenClipModel,
    TimmModel,
    check_model_spec,
    load_model,
)
from workers.images.tiny_models import save_tiny_hf, save_tiny_open_clip, save_tiny_timm

TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("models")
    save_tiny_timm(r / "timm")
    save_tiny_timm(r / "timm.pth", as_file=True)
    save_tiny_open_clip(r / "clip")
    save_tiny_hf(r / "hf")
    return r


def _batch(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


SPECS = {
    "timm-folder": TimmModel(family="timm", path="timm"),
    "timm-file": TimmModel(family="timm", path="timm.pth", arch="vit_tiny_patch16_224", model_args=TINY_VIT),
    "open_clip": OpenClipModel(family="open_clip", path="clip"),
    "hf": HFModel(family="hf", path="hf"),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_each_family_loads_to_a_feature_backbone(root: Path, name: str) -> None:
    m = load_model(SPECS[name], [root])
    assert m.preprocess.input_size == (32, 32)
    x = _batch()
    m.backbone.eval()
    f = m.backbone(x)
    assert f.shape == (4, m.feature_dim) and torch.isfinite(f).all()
    assert torch.equal(f, m.backbone(x))  # deterministic in eval mode
    # uint8 input is normalised inside: the same images as floats in [0, 1] give the same features
    assert torch.allclose(f, m.backbone(x.float() / 255), atol=1e-5)
    head = torch.nn.Linear(m.feature_dim, 7)  # any label set
    assert head(f).shape == (4, 7)


def test_loaded_weights_are_the_saved_ones(root: Path) -> None:
    import timm
    from safetensors.torch import load_file

    saved = load_file(str(root / "timm" / "model.safetensors"))
    m = load_model(SPECS["timm-folder"], [root])
    net = m.backbone.net  # type: ignore[union-attr]
    assert torch.equal(net.patch_embed.proj.weight, saved["patch_embed.proj.weight"])
    assert "head.weight" in saved and not any(k.startswith("head.") for k in net.state_dict())  # head dropped
    fresh = timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VIT)
    assert not torch.equal(fresh.patch_embed.proj.weight, net.patch_embed.proj.weight)


def test_timm_file_without_arch_names_the_field(root: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        check_model_spec(TimmModel(family="timm", path="timm.pth"), [root])
    assert e.value.field == "task.params.model.arch"
    with pytest.raises(InvalidSpec) as e:
        load_model(TimmModel(family="timm", path="timm.pth", arch="no_such_net"), [root])
    assert e.value.field == "task.params.model.arch" and "unknown timm architecture" in str(e.value)


def test_missing_path_and_outside_the_roots(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        load_model(HFModel(family="hf", path="nope"), [root])
    assert e.value.field == "task.params.model.path" and "does not exist" in str(e.value)
    save_tiny_timm(tmp_path / "elsewhere")
    with pytest.raises(InvalidSpec) as e:
        load_model(TimmModel(family="timm", path=str(tmp_path / "elsewhere")), [root])
    assert e.value.field == "task.params.model.path" and "outside the data roots" in str(e.value)
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidSpec, match="outside the data roots"):
        load_model(TimmModel(family="timm", path="link"), [root])


def test_corrupt_or_mismatched_weights_are_clear_errors(root: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidSpec) as e:
        load_model(TimmModel(family="timm", path="bad.pth", arch="vit_tiny_patch16_224"), [tmp_path])
    assert e.value.field == "task.params.model.path" and "cannot load timm model" in str(e.value)
    with pytest.raises(InvalidSpec) as e:  # a deeper architecture than the weights
        load_model(TimmModel(family="timm", path="timm.pth", arch="vit_tiny_patch16_224",
                             model_args={**TINY_VIT, "depth": 3}), [root])  # fmt: skip
    assert e.value.field == "task.params.model.path" and "missing blocks.2" in str(e.value)


def test_folder_without_its_config_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidSpec, match="no config.json"):
        check_model_spec(TimmModel(family="timm", path="empty"), [tmp_path])
    with pytest.raises(InvalidSpec, match="no open_clip_config.json"):
        check_model_spec(OpenClipModel(family="open_clip", path="empty"), [tmp_path])


def test_clip_zero_shot_head_and_text_tower(root: Path) -> None:
    m = load_model(
        OpenClipModel(family="open_clip", path="clip", templates=["a {}.", "a photo of a {}."]), [root]
    )
    assert m.has_text_tower and isinstance(m.backbone, ClipBackbone)
    names = ["cat", "dog", "car"]
    w = m.zero_shot_weights(names)
    assert w is not None and w.shape == (3, m.feature_dim)
    scale = float(m.backbone.logit_scale.detach().exp())
    assert torch.allclose(w.norm(dim=1), torch.full((3,), scale), rtol=1e-4)
    tokens = m.class_text_tokens(names)
    assert tokens is not None and tokens.shape == (3, 77)
    # text tower frozen by default, image tower trainable
    assert not any(p.requires_grad for p in m.backbone.text_parameters())
    assert all(p.requires_grad for p in m.backbone.clip.visual.parameters())
    # image features are unit norm; the zero-shot head predicts the most similar caption
    m.backbone.eval()
    f = m.backbone(_batch(6))
    assert torch.allclose(f.norm(dim=1), torch.ones(6), atol=1e-5)
    with torch.no_grad():
        text = torch.nn.functional.normalize(w, dim=-1)
    assert torch.equal((f @ w.T).argmax(1), (f @ text.T).argmax(1))
    assert m.backbone.encode_text(tokens).shape == (3, 32)


def test_clip_config_that_needs_the_hub_is_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        check_model_spec(OpenClipModel(family="open_clip", path="w.bin", arch="ViT-B-16-SigLIP"),
                         [_touch(tmp_path / "w.bin")])  # fmt: skip
    assert e.value.field == "task.params.model.arch" and "hub" in str(e.value)
    with pytest.raises(InvalidSpec, match="unknown open_clip config"):
        check_model_spec(OpenClipModel(family="open_clip", path="w.bin", arch="NoSuchCLIP"), [tmp_path])


def _touch(p: Path) -> Path:
    p.write_bytes(b"x")
    return p.parent


def test_templates_need_one_placeholder() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one"):
        OpenClipModel(family="open_clip", path="x", templates=["a photo"])


def test_hf_preprocessing_comes_from_its_config(root: Path) -> None:
    m = load_model(SPECS["hf"], [root])
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.std == (0.5, 0.5, 0.5)
    assert m.preprocess.interpolation == "bilinear" and m.feature_dim == 32


def test_no_network_is_touched_while_loading(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for spec in SPECS.values():
        assert load_model(spec, [root]).feature_dim > 0


def test_hf_weights_that_do_not_fit_the_config_are_refused(root: Path, tmp_path: Path) -> None:
    import json
    import shutil

    shutil.copytree(root / "hf", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3  # the weights hold 2 layers: the third would be random
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidSpec) as e:
        load_model(HFModel(family="hf", path="hf"), [tmp_path])
    assert e.value.field == "task.params.model.path" and "do not match" in str(e.value)


def test_clip_folder_without_weights_is_refused(root: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(root / "clip", tmp_path / "clip")
    (tmp_path / "clip" / "open_clip_model.safetensors").unlink()
    with pytest.raises(InvalidSpec) as e:  # never a silent fallback to random weights
        load_model(OpenClipModel(family="open_clip", path="clip"), [tmp_path])
    assert e.value.field == "task.params.model.path" and "holds no weights" in str(e.value)
