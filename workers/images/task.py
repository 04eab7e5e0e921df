"""``image-classification``: fine-tune a user's pretrained image model on the user's image datasets.

No code from the user: the spec names a model (timm, open_clip / CLIP or Hugging Face, from local weights)
and one data source per split (ImageFolder trees or CSV/parquet manifests). Everything is read from inside
the configured data roots and nothing is downloaded.

- The class list is ``classes`` or, by default, the classes found in ID train (sorted folder names or label
  values); every other split is mapped onto it.
- ID val defaults to a class-balanced hold-out of ID train (``id_val_size`` images).
- The OOD validation set is subsampled, class-balanced, to ``ood_val_size`` images (AutoFT searches on a
  small OOD validation set; its ImageNet runs use 1,000 images).
- Without an OOD validation set, ``ood_val_corruptions`` derives one from the ID val images: each named
  ImageNet-C-style corruption (:mod:`workers.images.corruptions`) applied to every ID val image, one named
  OOD val set per corruption (the objective aggregates them; ``ood_val`` is their union).
- Images are decoded once per machine into a uint8 cache in the model's own geometry (resize, centre crop)
  and memory-mapped by every worker; normalisation runs on the trial's device as the backbone's first layer.
- The starting head is CLIP's zero-shot head (class names × prompt templates) for open_clip models and a
  linear probe on frozen features otherwise (``head_init`` overrides).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import nn

from workers.images.corruptions import CORRUPTIONS, corrupt
from workers.images.data import (
    DataSource,
    Examples,
    cached_images,
    check_source,
    class_balanced_subsample,
    decode_images,
    discover_classes,
    image_cache_key,
    list_examples,
)
from workers.images.model_adapters import LoadedModel, ModelSpec, check_model_spec, load_model
from workers.images.paths import spec_error
from workers.tasks.base import Split, Task, TaskData, register_task

FIELD = "task.params"
#: Bumped whenever the corrupted images for the same inputs would change.
_CORRUPT_VERSION = "corrupt-v1"
#: Images corrupted at a time (bounds the memory; the noise is seeded per chunk, so it is part of the result).
_CORRUPT_CHUNK = 64


class ImageSplits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_train: DataSource
    id_val: DataSource | None = Field(default=None, description="Default: a hold-out of id_train.")
    id_test: DataSource
    ood_val: DataSource | None = Field(
        default=None, description="Required unless ood_val_corruptions derives it from the ID val images."
    )
    ood_tests: dict[str, DataSource] = Field(default_factory=dict, description="Named OOD test sets.")

    @field_validator("ood_tests")
    @classmethod
    def _names(cls, v: dict[str, DataSource]) -> dict[str, DataSource]:
        for name in v:
            if not name or "/" in name or name == "mean":
                raise ValueError(f"OOD test set name {name!r} must be non-empty, without '/', and not 'mean'")
        return v

    def named(self) -> dict[str, DataSource]:
        out: dict[str, DataSource] = {"id_train": self.id_train, "id_test": self.id_test}
        if self.ood_val is not None:
            out["ood_val"] = self.ood_val
        if self.id_val is not None:
            out["id_val"] = self.id_val
        out.update({f"ood_tests.{k}": v for k, v in self.ood_tests.items()})
        return out


_CORRUPTION_NAMES: list[JsonValue] = list(CORRUPTIONS.names())


class OODValCorruptions(BaseModel):
    """An OOD validation set made from the ID val images: every image under each corruption, pooled.

    Its groups are the corruptions (in ``names`` order; crossed with ID val's own groups when it has them),
    so ``worst_group_accuracy`` on it is the accuracy under the worst corruption."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(
        default_factory=CORRUPTIONS.names,
        min_length=1,
        description="Corruptions to apply (default: all): " + ", ".join(CORRUPTIONS.names()) + ".",
        json_schema_extra={"items": {"type": "string", "enum": _CORRUPTION_NAMES}},
    )
    severity: int = Field(default=3, ge=1, le=5, description="ImageNet-C severity, 1 (mild) to 5.")
    seed: int = Field(default=0, ge=0, description="Seeds the random corruptions (gaussian_noise).")

    @field_validator("names")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS.names())}")
        if len(set(v)) != len(v):
            raise ValueError("corruption names must be unique")
        return v


class ImageTaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    data: ImageSplits
    classes: list[str] | None = Field(
        default=None, min_length=2, description="Class names in label order; default: found in id_train."
    )
    id_val_size: int = Field(default=200, ge=1, description="Hold-out size when data.id_val is not given.")
    ood_val_size: int | None = Field(
        default=None, ge=1, description="Class-balanced subsample of the OOD validation set (AutoFT: 1000)."
    )
    ood_val_corruptions: OODValCorruptions | None = Field(
        default=None,
        description="Derive the OOD validation set from the ID val images (instead of data.ood_val).",
    )
    head_init: Literal["auto", "lp", "zeroshot"] = Field(
        default="auto", description="Starting head: auto = zero-shot for CLIP models, linear probe otherwise."
    )
    split_seed: int = Field(default=0, ge=0)
    decode_workers: int = Field(default=4, ge=1, le=64, description="Threads decoding images (once).")

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("class names must be unique")
        return v

    @model_validator(mode="after")
    def _paths(self, info: ValidationInfo) -> ImageTaskParams:
        """Cheap checks at submission: every path the spec names (model weights, folders, manifests, image
        roots) is inside the data roots and exists, no model argument names a file, no symlink in the model
        or image folders and no manifest row leads outside the roots, the model's package is installed.
        (Whether each listed image exists and decodes is checked when the job prepares its data.)"""
        roots = tuple((info.context or {}).get("data_roots") or ())
        if self.data.ood_val is None and self.ood_val_corruptions is None:
            raise spec_error(
                f"{FIELD}.data.ood_val",
                "an OOD validation set is required: give data.ood_val, or ood_val_corruptions to derive one "
                "from the ID val images",
            )
        if self.data.ood_val is not None and self.ood_val_corruptions is not None:
            raise spec_error(
                f"{FIELD}.ood_val_corruptions",
                "give either data.ood_val or ood_val_corruptions (which derives the OOD validation set from "
                "the ID val images), not both",
            )
        check_model_spec(self.model, roots, field=f"{FIELD}.model")
        for name, src in self.data.named().items():
            check_source(src, roots, field=f"{FIELD}.data.{name}")
        if self.head_init == "zeroshot" and self.model.family != "open_clip":
            raise ValueError("head_init 'zeroshot' needs an open_clip (CLIP) model")
        return self


@register_task("image-classification")
class ImageClassificationTask(Task):
    summary = (
        "Your pretrained timm / open_clip / Hugging Face image model on your ImageFolder or CSV/parquet "
        "datasets (ID train/val/test, OOD val, OOD tests), from local files under the data roots."
    )
    Params = ImageTaskParams
    params: ImageTaskParams

    @classmethod
    def example_params(cls, root: Path) -> dict[str, Any]:
        """A tiny timm model, ImageFolder ID splits and a grouped CSV manifest for OOD, under ``root``."""
        from workers.images.synthetic_data import make_image_folder, make_manifest
        from workers.images.tiny_models import save_tiny_timm

        classes = ["a", "b", "c"]
        save_tiny_timm(root / "timm")
        make_image_folder(root / "train", classes, 6, seed=1)
        make_image_folder(root / "test", classes, 3, seed=2)
        make_manifest(root / "ood.csv", root / "ood", classes, 4, shift="noise", groups=True, seed=3)
        return {
            "model": {"family": "timm", "path": "timm"},
            "data": {
                "id_train": {"format": "imagefolder", "path": "train"},
                "id_test": {"format": "imagefolder", "path": "test"},
                "ood_val": {"format": "csv", "path": "ood.csv", "group_column": "group"},
                "ood_tests": {"noise": {"format": "csv", "path": "ood.csv"}},
            },
            "id_val_size": 6,
            "decode_workers": 1,
        }

    @classmethod
    def supports_text_tower(cls, params: BaseModel) -> bool:
        return isinstance(params, ImageTaskParams) and params.model.family == "open_clip"

    def prepare(self) -> None:
        """Decode every split into the machine's image cache once, before any worker starts."""
        self.load()

    def load(self) -> TaskData:
        p, roots = self.params, self.data_roots
        loaded = load_model(p.model, roots, field=f"{FIELD}.model")
        classes = list(p.classes or discover_classes(p.data.id_train, roots, field=f"{FIELD}.data.id_train"))

        def examples(name: str, src: DataSource) -> Examples:
            return list_examples(src, classes, roots, field=f"{FIELD}.data.{name}", seed=p.split_seed)

        train = examples("id_train", p.data.id_train)
        if p.data.id_val is not None:
            val = examples("id_val", p.data.id_val)
        else:
            if len(train.paths) < 2 * len(classes):
                raise spec_error(
                    f"{FIELD}.data.id_train",
                    "too few images to hold out an ID validation set; give data.id_val",
                )
            held = set(class_balanced_subsample(train.labels, min(p.id_val_size, len(train.paths) // 2),
                                                p.split_seed))  # fmt: skip
            val = _subset(train, sorted(held))
            train = _subset(train, [i for i in range(len(train.paths)) if i not in held])

        def split(ex: Examples, name: str) -> Split:
            x = decode_images(ex.paths, loaded.preprocess, self.cache_dir, workers=p.decode_workers,
                              field=f"{FIELD}.data.{name}")  # fmt: skip
            groups = torch.tensor(ex.groups, dtype=torch.long) if ex.groups is not None else None
            return Split(x, torch.tensor(ex.labels, dtype=torch.long), groups)

        id_val = split(val, "id_val" if p.data.id_val is not None else "id_train")
        ood_val_sets: dict[str, Split] = {}
        if p.ood_val_corruptions is not None:
            id_val_key = image_cache_key(val.paths, loaded.preprocess)
            ood_val = self._corrupted(id_val, id_val_key, p.ood_val_corruptions)
            ood_val_sets = _per_group(ood_val, p.ood_val_corruptions.names, id_val)
        elif p.data.ood_val is not None:
            ood = examples("ood_val", p.data.ood_val)
            if p.ood_val_size is not None:
                ood = _subset(ood, class_balanced_subsample(ood.labels, p.ood_val_size, p.split_seed))
            ood_val = split(ood, "ood_val")
        else:  # refused by the params' validator; kept for params built without validation
            raise spec_error(f"{FIELD}.data.ood_val", "an OOD validation set is required")

        head_init = p.head_init
        if head_init == "auto":
            head_init = "zeroshot" if loaded.has_text_tower else "lp"
        init_head = None
        if head_init == "zeroshot":
            weights = self._zero_shot(loaded, classes)
            init_head = nn.Linear(loaded.feature_dim, len(classes))
            with torch.no_grad():
                init_head.weight.copy_(weights)
                init_head.bias.zero_()
        return TaskData(
            backbone=loaded.backbone,
            feature_dim=loaded.feature_dim,
            num_classes=len(classes),
            id_train=split(train, "id_train"),
            id_val=id_val,
            id_test=split(examples("id_test", p.data.id_test), "id_test"),
            ood_val=ood_val,
            ood_tests={
                k: split(examples(f"ood_tests.{k}", v), f"ood_tests.{k}") for k, v in p.data.ood_tests.items()
            },
            init_head=init_head,
            ood_val_sets=ood_val_sets,
            class_text_tokens=loaded.class_text_tokens(classes) if loaded.has_text_tower else None,
            class_names=classes,
        )

    def _corrupted(self, id_val: Split, id_val_key: str, spec: OODValCorruptions) -> Split:
        """The OOD validation split ``spec`` derives from the decoded ID val images, cached on disk.

        Corruption ``c`` of image ``i`` is entry ``c * len(id_val) + i`` of the pool; ``ood_val_size`` keeps a
        subsample balanced over the classes and, within each class, over the corruptions. The images are
        computed once per machine into the image cache (keyed by ID val's own cache key, the corruptions,
        severity, seed and the subsample) and memory-mapped, like the decoded splits."""
        p, n, k = self.params, len(id_val), len(spec.names)
        labels = id_val.y.repeat(k)
        corruption = torch.arange(k).repeat_interleave(n)
        keep = torch.arange(n * k)
        if p.ood_val_size is not None:
            picked = _balanced_pool(labels.tolist(), corruption.tolist(), p.ood_val_size, p.split_seed)
            keep = torch.tensor(picked, dtype=torch.long)
        digest = hashlib.sha256(f"{_CORRUPT_VERSION}\0{id_val_key}\0{spec.model_dump_json()}\0".encode())
        digest.update(keep.numpy().astype(np.int64).tobytes())

        def fill(out: np.ndarray) -> None:
            for c, name in enumerate(spec.names):
                rows = torch.nonzero(corruption[keep] == c).flatten()
                for start in range(0, len(rows), _CORRUPT_CHUNK):
                    chunk = rows[start : start + _CORRUPT_CHUNK]
                    seed = int(np.random.SeedSequence([spec.seed, zlib.crc32(name.encode()), start])
                               .generate_state(1)[0])  # fmt: skip
                    images = id_val.x[keep[chunk] % n]
                    out[chunk.numpy()] = corrupt(images, name, spec.severity, seed).numpy()

        x = cached_images(self.cache_dir, digest.hexdigest(), (len(keep), *id_val.x.shape[1:]), fill)
        groups = corruption
        if id_val.groups is not None:  # crossed: (corruption, ID val group) pairs
            groups = corruption * (int(id_val.groups.max()) + 1) + id_val.groups.repeat(k)
        return Split(x, labels[keep], groups[keep])

    def _zero_shot(self, loaded: LoadedModel, classes: list[str]) -> torch.Tensor:
        """CLIP's zero-shot head weights, computed once per machine (classes × templates captions through
        the text tower) and cached by weights fingerprint, class names and templates."""
        from workers.disk_cache import cached_tensor
        from workers.prepared import weights_fingerprint

        templates = getattr(self.params.model, "templates", [])
        key = json.dumps([weights_fingerprint(loaded.backbone), classes, templates])
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]

        def compute() -> torch.Tensor:
            w = loaded.zero_shot_weights(classes)
            assert w is not None
            return w

        return cached_tensor(self.cache_dir / "zeroshot" / f"{digest}.pt", compute,
                             valid=lambda t: t.shape == (len(classes), loaded.feature_dim))  # fmt: skip


def _subset(ex: Examples, idx: list[int]) -> Examples:
    return Examples(
        paths=[ex.paths[i] for i in idx],
        labels=[ex.labels[i] for i in idx],
        groups=[ex.groups[i] for i in idx] if ex.groups is not None else None,
        group_names=ex.group_names,
    )


def _balanced_pool(labels: list[int], kinds: list[int], size: int, seed: int) -> list[int]:
    """Sorted indices of ``size`` entries, class-balanced as :func:`class_balanced_subsample`, and within
    each class balanced the same way over ``kinds`` (the corruption of each entry)."""
    per_class: dict[int, list[int]] = {}
    for i in class_balanced_subsample(labels, size, seed):
        per_class.setdefault(labels[i], []).append(i)
    keep: list[int] = []
    for y, chosen in per_class.items():
        members = [i for i, label in enumerate(labels) if label == y]
        picked = class_balanced_subsample([kinds[i] for i in members], len(chosen), seed + y)
        keep.extend(members[j] for j in picked)
    return sorted(keep)


def _per_group(pooled: Split, names: list[str], id_val: Split) -> dict[str, Split]:
    """The pooled corrupted OOD val split as one named set per corruption (what the objective aggregates);
    each set keeps ID val's own groups, if any."""
    if pooled.groups is None:
        raise ValueError("the corrupted OOD val split carries its corruption as groups")
    width = int(id_val.groups.max()) + 1 if id_val.groups is not None else 1
    corruption = pooled.groups // width
    out: dict[str, Split] = {}
    for c, name in enumerate(names):
        rows = torch.nonzero(corruption == c).flatten()
        groups = pooled.groups[rows] % width if id_val.groups is not None else None
        out[name] = Split(pooled.x[rows], pooled.y[rows], groups)
    return out
