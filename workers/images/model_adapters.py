"""Model adapters: timm, open_clip (CLIP) and Hugging Face image models, from local weights only.

Each adapter turns a spec (``family`` + ``path`` …) into a :class:`LoadedModel`: a backbone that maps uint8
images ``[N, 3, H, W]`` to features (its first layer normalises with the model's own mean / std), the
feature size, the model's preprocessing geometry, and for CLIP models the text side (zero-shot head
weights, class captions for FLYP). The pretrained classifier is dropped: the task fits a new head for its
own label set.

Nothing is ever downloaded: hub access is switched off before the libraries are imported, every path is
confined to the data roots, and configurations that would need the hub (open_clip models with a Hugging
Face text tower or tokenizer) are refused with an error naming the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from workers.errors import InvalidSpec
from workers.images.paths import confine, spec_error
from workers.images.preprocess import Normalize, Preprocess

#: Prompt templates for CLIP's zero-shot head when a spec gives none (a subset of CLIP's ImageNet set).
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a rendition of a {}.",
    "art of the {}.",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                "open_clip_pytorch_model.bin")  # fmt: skip


#: Words that make a free-form argument's key name a file, folder, URL or pretrained weights (timm's
#: ``checkpoint_path``, ``pretrained_cfg`` / ``pretrained_cfg_overlay`` with their ``file``, ``cache_dir`` …).
_FILE_WORDS = frozenset({
    "path", "paths", "file", "files", "filename", "dir", "directory", "folder", "checkpoint", "ckpt",
    "pretrained", "url", "uri", "hub", "cache", "root", "weights", "location",
})  # fmt: skip
FILE_ARGUMENT_REFUSED = (
    "model arguments may not name files, folders, URLs or pretrained weights (the weights come from 'path')"
)


def _path_like(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith(("~", ".")) or "\x00" in value


def _names_a_file(key: str, value: Any) -> bool:
    """A key with a file word whose value could be a location (not a number: ``drop_path_rate: 0.1``)."""
    words = set(re.split(r"[^a-z0-9]+", key.lower()))
    could_locate = value is True or (isinstance(value, (str, dict, list, tuple)) and bool(value))
    return bool(words & _FILE_WORDS) and could_locate


def file_naming_argument(args: Any, where: str = "") -> str | None:
    """The dotted key (relative to ``args``) of the first free-form argument that could make a library open
    a file: a key that names a path, file, folder, URL, hub or pretrained weights, or a string value that
    looks like a path or URL, at any depth. ``None`` when there is none.

    Such arguments are refused rather than confined: the adapters take weights only from the spec's
    ``path``, which is checked against the data roots, so no library ever gets a second path to open."""
    if isinstance(args, dict):
        for k, v in args.items():
            key = f"{where}.{k}" if where else str(k)
            if _names_a_file(str(k), v):
                return key
            if (found := file_naming_argument(v, key)) is not None:
                return found
    elif isinstance(args, (list, tuple)):
        for i, v in enumerate(args):
            if (found := file_naming_argument(v, f"{where}.{i}" if where else str(i))) is not None:
                return found
    elif isinstance(args, str) and _path_like(args):
        return where or "."
    return None


def _offline() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimmModel(_Spec):
    """A timm model: a hub-layout folder (``config.json`` with ``architecture``, optional ``model_args`` and
    ``pretrained_cfg``; ``model.safetensors`` or ``pytorch_model.bin``) or one weights file plus ``arch``."""

    family: Literal["timm"]
    path: str
    arch: str | None = Field(default=None, description="timm model name; required when path is a file.")
    model_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra timm.create_model kwargs (architecture options only: no argument may name a file, "
        "a folder, a URL or pretrained weights; the weights come from 'path').",
    )


class OpenClipModel(_Spec):
    """An open_clip model: a folder (``open_clip_config.json`` + weights) or one weights file plus ``arch``
    (a built-in open_clip config such as ``ViT-B-16``)."""

    family: Literal["open_clip"]
    path: str
    arch: str | None = Field(default=None, description="open_clip config name; required when path is a file.")
    templates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1, max_length=100
    )

    @field_validator("templates")
    @classmethod
    def _placeholder(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}' for the class name")
        return v


class HFModel(_Spec):
    """A Hugging Face image model saved with ``save_pretrained`` (config, weights, preprocessor config)."""

    family: Literal["hf"]
    path: str


ModelSpec = Annotated[TimmModel | OpenClipModel | HFModel, Field(discriminator="family")]


@dataclass
class LoadedModel:
    backbone: nn.Module
    feature_dim: int
    preprocess: Preprocess
    family: str
    has_text_tower: bool = False
    _tokenize: Any = field(default=None, repr=False)
    _templates: tuple[str, ...] = ()

    @torch.no_grad()
    def zero_shot_weights(self, class_names: Sequence[str]) -> torch.Tensor | None:
        """CLIP's zero-shot head: per class, the mean over templates of the normalised caption embeddings,
        renormalised and scaled by ``exp(logit_scale)``; ``[C, feature_dim]``. ``None`` without a text tower."""
        if not self.has_text_tower:
            return None
        backbone: Any = self.backbone
        rows = []
        for name in class_names:
            tokens = self._tokenize([t.format(name) for t in self._templates])
            emb = F.normalize(backbone.encode_text(tokens).float(), dim=-1).mean(dim=0)
            rows.append(F.normalize(emb, dim=-1))
        return torch.stack(rows) * backbone.logit_scale.exp().float()

    def class_text_tokens(self, class_names: Sequence[str]) -> torch.Tensor | None:
        """One tokenised caption per class (the first template), ``[C, context_length]``."""
        if not self.has_text_tower:
            return None
        return self._tokenize([self._templates[0].format(n) for n in class_names])


# Backbones ----------------------------------------------------------------------------------------------------
class TimmBackbone(nn.Module):
    def __init__(self, net: nn.Module, pre: Preprocess) -> None:
        super().__init__()
        self.normalize = Normalize(pre.mean, pre.std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class HFBackbone(nn.Module):
    def __init__(self, net: nn.Module, pre: Preprocess) -> None:
        super().__init__()
        self.normalize = Normalize(pre.mean, pre.std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=self.normalize(x)).logits


class ClipBackbone(nn.Module):
    """A whole CLIP model seen as an image backbone: ``forward`` returns L2-normalised image embeddings (so
    the zero-shot head is a plain linear layer); ``encode_text`` and ``logit_scale`` expose the text side.
    The text tower is frozen by default; FLYP-style training switches it on (``text_parameters``)."""

    def __init__(self, clip: nn.Module, pre: Preprocess) -> None:
        super().__init__()
        self.normalize = Normalize(pre.mean, pre.std)
        self.clip = clip
        for p in self.text_parameters():
            p.requires_grad_(False)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale  # type: ignore[return-value]

    def text_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.clip.named_parameters():
            if not (name.startswith("visual.") or name == "logit_scale" or name.startswith("logit_bias")):
                yield p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip: Any = self.clip
        return F.normalize(clip.encode_image(self.normalize(x)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        clip: Any = self.clip
        return clip.encode_text(tokens.to(self.logit_scale.device))


# Loading ------------------------------------------------------------------------------------------------------


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


_PACKAGES = {"timm": ("timm", "timm"), "open_clip": ("open_clip", "clip"), "hf": ("transformers", "hf")}


def _require(family: str, field: str) -> None:
    module, extra = _PACKAGES[family]
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise spec_error(f"{field}.family", f"the {family} adapter needs the {module!r} package; "
                                       f"pip install 'autoft-service[{extra}]'")  # fmt: skip


def _weights_in(folder: Path) -> Path | None:
    return next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)


def _read_json(file: Path, field: str) -> dict[str, Any]:
    try:
        cfg = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise spec_error(field, f"cannot read {file.name}: {_short(e)}") from None
    if not isinstance(cfg, dict):
        raise spec_error(field, f"{file.name} is not a JSON object")
    return cfg


def _confine_folder(folder: Path, roots: Sequence[Path], field: str) -> None:
    """Every symlink in a model folder (at any depth) must resolve inside the roots: a library loading the
    folder opens what it finds there."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                confine(p, roots, field=field, kind="model file", must_exist=False)


def _confine_shards(folder: Path, roots: Sequence[Path], field: str) -> None:
    """A sharded Hugging Face checkpoint's index names its shard files: each must lie inside the roots."""
    for index in sorted(folder.glob("*.index.json")):
        weight_map = _read_json(index, field).get("weight_map", {})
        for shard in sorted(set(weight_map.values()) if isinstance(weight_map, dict) else ()):
            confine(str(shard), roots, field=field, base=folder, must_exist=False, kind=f"{index.name} shard")


def check_model_spec(spec: TimmModel | OpenClipModel | HFModel, roots: Sequence[Path], *,
                     field: str = "task.params.model") -> Path:  # fmt: skip
    """Cheap checks at submission: the path is inside the data roots and exists, the layout is the one the
    family expects, the family's package is installed. Returns the resolved path."""
    if isinstance(spec, TimmModel) and (where := file_naming_argument(spec.model_args)) is not None:
        raise spec_error(f"{field}.model_args.{where}", FILE_ARGUMENT_REFUSED)  # nothing is opened first
    path = confine(spec.path, roots, field=f"{field}.path", kind="weights path")
    _require(spec.family, field)
    if path.is_dir():
        _confine_folder(path, roots, f"{field}.path")
    if isinstance(spec, HFModel):
        if not path.is_dir() or not (path / "config.json").is_file():
            raise spec_error(
                f"{field}.path", f"{spec.path!r} is not a Hugging Face model folder (no config.json)"
            )
        _confine_shards(path, roots, f"{field}.path")
        if (path / "adapter_config.json").exists():  # transformers would load the base model it names
            raise spec_error(f"{field}.path", "adapter folders (adapter_config.json) are not supported; "
                                              "give the merged model's save_pretrained folder")  # fmt: skip
        return path
    config = "config.json" if isinstance(spec, TimmModel) else "open_clip_config.json"
    if path.is_dir():
        if not (path / config).is_file():
            raise spec_error(f"{field}.path", f"folder {spec.path!r} has no {config}; give a folder in the "
                                         f"{spec.family} layout, or a weights file and 'arch'")  # fmt: skip
        if _weights_in(path) is None:
            raise spec_error(
                f"{field}.path", f"folder {spec.path!r} holds no weights ({', '.join(WEIGHT_FILES)})"
            )
        if isinstance(spec, TimmModel):
            args = _read_json(path / config, f"{field}.path").get("model_args", {})
            if (where := file_naming_argument(args)) is not None:
                raise spec_error(f"{field}.path", f"{config} model_args.{where}: {FILE_ARGUMENT_REFUSED}")
    elif spec.arch is None:
        raise spec_error(
            f"{field}.arch", f"{spec.path!r} is a single weights file: name its architecture in 'arch'"
        )
    if isinstance(spec, OpenClipModel):
        _, cfg = _clip_config(spec, path, field)  # refuses hub text towers with their own message first
        if path.is_dir() and (where := file_naming_argument(cfg)) is not None:
            raise spec_error(f"{field}.path", f"open_clip_config.json {where}: {FILE_ARGUMENT_REFUSED}")
    elif spec.arch is not None:
        import timm

        if not timm.is_model(spec.arch):
            raise spec_error(f"{field}.arch", f"unknown timm architecture {spec.arch!r}")
    return path


def load_model(spec: TimmModel | OpenClipModel | HFModel, roots: Sequence[Path], *,
               field: str = "task.params.model") -> LoadedModel:  # fmt: skip
    """Load a model from local files (never the network); errors name the spec field at fault."""
    _offline()
    path = check_model_spec(spec, roots, field=field)
    try:
        if isinstance(spec, TimmModel):
            return _load_timm(spec, path, field)
        if isinstance(spec, OpenClipModel):
            return _load_open_clip(spec, path, field)
        return _load_hf(path, field)
    except InvalidSpec:
        raise
    except Exception as e:  # a library's own error on unreadable or mismatched weights
        raise spec_error(
            f"{field}.path", f"cannot load {spec.family} model from {spec.path!r}: {_short(e)}"
        ) from e


def _read_state(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(file), device="cpu")
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError("the weights file holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_timm(spec: TimmModel, path: Path, field: str) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    cfg: dict[str, Any] = {}
    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text())
        file = _weights_in(path)
        assert file is not None
    else:
        file = path
    arch = spec.arch or cfg.get("architecture")
    if not arch:
        raise spec_error(f"{field}.path", "config.json names no 'architecture'")
    if not timm.is_model(arch):
        raise spec_error(f"{field}.arch", f"unknown timm architecture {arch!r}")
    kwargs = {**cfg.get("model_args", {}), **spec.model_args}
    net = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    state = _read_state(file)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise spec_error(f"{field}.path", f"weights do not fit {arch!r}: missing {', '.join(missing[:5])}"
                                     + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))  # fmt: skip
    for k in own:
        if state[k].shape != own[k].shape:
            raise spec_error(f"{field}.path", f"weights do not fit {arch!r}: {k} has shape {tuple(state[k].shape)}, "
                                         f"the model {tuple(own[k].shape)}")  # fmt: skip
    net.load_state_dict({k: state[k] for k in own})  # the pretrained classifier, if any, is dropped
    data_cfg = resolve_data_config(pretrained_cfg=cfg.get("pretrained_cfg") or None, model=net)
    _, h, w = data_cfg["input_size"]
    fixed = getattr(getattr(net, "patch_embed", None), "img_size", None)  # ViT-like: one input size only
    if fixed is not None and tuple(fixed) != (h, w):
        h, w = (int(v) for v in fixed)
    elif isinstance(kwargs.get("img_size"), int):
        h = w = int(kwargs["img_size"])
    pre = Preprocess.from_crop_pct(
        (h, w), float(data_cfg.get("crop_pct") or 1.0), mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]),
        interpolation=_interp(data_cfg.get("interpolation")),
    )  # fmt: skip
    return LoadedModel(TimmBackbone(net, pre), int(getattr(net, "num_features")), pre, "timm")  # noqa: B009


def _interp(name: Any) -> Literal["nearest", "bilinear", "bicubic"]:
    table = {0: "nearest", 2: "bilinear", 3: "bicubic"}
    value = table.get(name, name) if isinstance(name, int) else str(name or "bicubic").lower()
    return value if value in ("nearest", "bilinear", "bicubic") else "bicubic"  # type: ignore[return-value]


def _clip_config(spec: OpenClipModel, path: Path, field: str) -> tuple[str, dict[str, Any]]:
    """The open_clip model name to create and its model config; refuse configs that need the hub."""
    import open_clip

    if path.is_dir():
        name = f"local-dir:{path}"
        raw = json.loads((path / "open_clip_config.json").read_text())
        cfg = raw.get("model_cfg", raw)
    else:
        name = str(spec.arch)
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise spec_error(
                f"{field}.arch", f"unknown open_clip config {name!r} (see open_clip.list_models())"
            )
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        raise spec_error(f"{field}.{'arch' if not path.is_dir() else 'path'}",
                    "this open_clip config uses a Hugging Face text tower or tokenizer, which needs the hub; "
                    "use a config with open_clip's built-in text tower")  # fmt: skip
    return name, cfg


def _load_open_clip(spec: OpenClipModel, path: Path, field: str) -> LoadedModel:
    import open_clip

    name, cfg = _clip_config(spec, path, field)
    # require_pretrained: open_clip would otherwise fall back to random weights when it finds none
    if path.is_dir():
        clip = open_clip.create_model(name, pretrained_text=False, require_pretrained=True)
    else:
        clip = open_clip.create_model(
            name, pretrained=str(path), pretrained_text=False, require_pretrained=True
        )
    clip.eval()
    tokenizer = open_clip.get_tokenizer(name)
    pcfg = open_clip.get_model_preprocess_cfg(clip)
    size = pcfg.get("size", cfg.get("vision_cfg", {}).get("image_size", 224))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    pre = Preprocess(input_size=(h, w), resize=min(h, w), mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]),
                     interpolation=_interp(pcfg.get("interpolation")))  # fmt: skip
    backbone = ClipBackbone(clip, pre)
    dim = int(cfg.get("embed_dim") or backbone(torch.zeros(1, 3, h, w, dtype=torch.uint8)).shape[-1])
    return LoadedModel(backbone, dim, pre, "open_clip", has_text_tower=True, _tokenize=tokenizer,
                       _templates=tuple(spec.templates))  # fmt: skip


def _load_hf(path: Path, field: str) -> LoadedModel:
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    net, info = AutoModelForImageClassification.from_pretrained(
        str(path), local_files_only=True, output_loading_info=True
    )
    net.eval()
    head = _drop_classifier(net)
    if head is None:
        raise spec_error(f"{field}.path", "cannot find the model's classifier (a final nn.Linear) to replace")
    attr, dim = head
    # transformers fills missing weights with random ones and only logs it: refuse, except for the
    # classifier (absent from a base checkpoint, and dropped anyway)
    bad = sorted(
        str(k[0] if isinstance(k, tuple) else k)
        for kind in ("missing_keys", "mismatched_keys")
        for k in info.get(kind, ())
        if not str(k[0] if isinstance(k, tuple) else k).startswith((f"{attr}.", attr))
    )
    if bad:
        raise spec_error(f"{field}.path", f"the weights do not match the model config: {', '.join(bad[:5])}"
                                     + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))  # fmt: skip
    pre = _hf_preprocess(path)
    return LoadedModel(HFBackbone(net, pre), dim, pre, "hf")


def _drop_classifier(net: nn.Module) -> tuple[str, int] | None:
    """Replace the classification Linear (``classifier``, or the last Linear of a Sequential) by Identity,
    so ``.logits`` are the pooled features; return (its attribute, the feature size)."""
    for attr in ("classifier", "cls_classifier", "head", "fc"):
        mod = getattr(net, attr, None)
        if isinstance(mod, nn.Linear):
            setattr(net, attr, nn.Identity())
            return attr, int(mod.in_features)
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1, -1, -1):
                layer = mod[i]
                if isinstance(layer, nn.Linear):
                    dim = int(layer.in_features)
                    mod[i] = nn.Identity()
                    return attr, dim
    return None


def _hf_preprocess(path: Path) -> Preprocess:
    """Geometry and normalisation from ``preprocessor_config.json`` (ImageNet defaults when absent). A
    fixed ``size: {height, width}`` is approximated by resizing the shorter side and centre-cropping."""
    file = path / "preprocessor_config.json"
    cfg = json.loads(file.read_text()) if file.is_file() else {}
    size = cfg.get("size", 224)
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if "height" in size:
        h, w = int(size["height"]), int(size["width"])
        resize = min(h, w)
    else:
        short = int(size.get("shortest_edge", 224))
        if crop:
            crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
            h, w = int(crop["height"]), int(crop["width"])
            resize = max(short, min(h, w))
        elif cfg.get("crop_pct"):
            h = w = short
            resize = int(short / float(cfg["crop_pct"]))
        else:
            h = w = short
            resize = short
    mean = tuple(cfg.get("image_mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("image_std", (0.229, 0.224, 0.225)))
    return Preprocess(input_size=(h, w), resize=resize, mean=mean, std=std,  # type: ignore[arg-type]
                      interpolation=_interp(cfg.get("resample", 2)))  # fmt: skip
