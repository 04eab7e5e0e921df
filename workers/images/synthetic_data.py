"""Synthetic image datasets for tests, examples and benchmarks: learnable classes, controllable shifts.

Each class is a striped patch with its own stripe orientation and frequency, tinted with its own hue, on a
grey background; every image jitters the angle, frequency, phase, tint, patch position and size and adds
pixel noise, so a small CNN or ViT has something to learn and nothing to memorise. ``shift`` applies a
distribution shift of a given severity on top of the very same images (same ``seed``), for OOD splits.
Only numpy and PIL; deterministic for a seed.
"""

from __future__ import annotations

import colorsys
import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

SHIFTS = ("noise", "contrast", "blur", "color")
#: Groups for manifests (``groups=True``): a spurious background attribute, as in Waterbirds-style data.
GROUPS = ("dark", "light")


def _check(classes: Sequence[str], per_class: int, size: int, shift: str | None, severity: float) -> None:
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise ValueError("classes must be a non-empty list of unique names")
    if per_class < 1 or size < 8:
        raise ValueError(f"need per_class >= 1 and size >= 8, got {per_class} and {size}")
    if shift is not None and shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose one of {', '.join(SHIFTS)}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")


def _render(k: int, n_classes: int, size: int, rng: np.random.Generator, background: float) -> np.ndarray:
    """The clean image of class ``k``: float32 [size, size, 3] in [0, 255]."""
    angle = np.pi * k / n_classes + rng.uniform(-0.25, 0.25) * np.pi / n_classes
    freq = (2.0 + (k % 3)) * rng.uniform(0.9, 1.1) * 2 * np.pi / 12.0  # 2-4 stripes per 12 px
    hue = (k / n_classes + rng.uniform(-0.03, 0.03)) % 1.0
    tint = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 0.9), rng.uniform(0.75, 1.0)), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    img = np.full((size, size, 3), background, np.float32)
    side = int(size * rng.uniform(0.55, 0.85))
    top, left = rng.integers(0, size - side + 1, size=2)
    patch = stripes[top : top + side, left : left + side, None] * tint * 255.0
    img[top : top + side, left : left + side] = 0.25 * background + 0.75 * patch
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255)


def _shift(img: np.ndarray, shift: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    if shift == "noise":
        img = img + rng.normal(0.0, 80.0 * severity, img.shape)
    elif shift == "contrast":
        mean = img.mean()
        img = mean + (img - mean) * (1.0 - 0.85 * severity)
    elif shift == "blur":
        radius = (0.3 + 1.5 * severity) * img.shape[0] / 32.0
        blurred = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(radius)
        )
        img = np.asarray(blurred, np.float32)
    else:  # color: rotate the channels (a hue shift), blended by severity
        img = (1.0 - severity) * img + severity * img[..., [1, 2, 0]]
    return np.clip(img, 0, 255)


def _image(
    k: int, i: int, n_classes: int, size: int, seed: int, shift: str | None, severity: float, group: int = 0
) -> np.ndarray:
    rng = np.random.default_rng((seed, k, i))
    img = _render(k, n_classes, size, rng, background=(80.0, 170.0)[group])
    if shift is not None:
        img = _shift(img, shift, severity, np.random.default_rng((seed, k, i, 1)))
    return np.rint(img).astype(np.uint8)


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_image_folder(
    root: Path,
    classes: Sequence[str],
    per_class: int,
    *,
    size: int = 32,
    shift: str | None = None,
    severity: float = 0.5,
    seed: int = 0,
    fmt: str = "png",
) -> Path:
    """Write ``root/<class>/<nnnnn>.<fmt>``, ``per_class`` images per class; return ``root``."""
    _check(classes, per_class, size, shift, severity)
    root = Path(root)
    for k, name in enumerate(classes):
        for i in range(per_class):
            _save(_image(k, i, len(classes), size, seed, shift, severity), root / name / f"{i:05d}.{fmt}")
    return root


def make_manifest(
    path: Path,
    image_root: Path,
    classes: Sequence[str],
    per_class: int,
    *,
    fmt: Literal["csv", "parquet"] | None = None,
    size: int = 32,
    shift: str | None = None,
    severity: float = 0.5,
    seed: int = 0,
    groups: bool = False,
    int_labels: bool = False,
    image_fmt: str = "png",
) -> Path:
    """Write images under ``image_root`` and a manifest at ``path`` (``fmt``: from the suffix by default).

    Columns: ``path`` (relative to the manifest's folder), ``label`` (the class name, or its index with
    ``int_labels``) and, with ``groups``, ``group`` (``dark`` / ``light`` background, alternating within
    each class). Returns ``path``.
    """
    _check(classes, per_class, size, shift, severity)
    path, image_root = Path(path), Path(image_root)
    fmt = fmt or ("parquet" if path.suffix == ".parquet" else "csv" if path.suffix == ".csv" else None)  # type: ignore[assignment]
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"cannot tell the manifest format of {path}; pass fmt='csv' or 'parquet'")
    rows: list[dict[str, object]] = []
    for k, name in enumerate(classes):
        for i in range(per_class):
            g = i % 2 if groups else 0
            file = image_root / f"{k:03d}_{i:05d}.{image_fmt}"
            _save(_image(k, i, len(classes), size, seed, shift, severity, group=g), file)
            row: dict[str, object] = {
                "path": Path(os.path.relpath(file, path.parent)).as_posix(),
                "label": k if int_labels else name,
            }
            if groups:
                row["group"] = GROUPS[g]
            rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path
