"""Dataset adapters: ImageFolder trees and CSV / parquet manifests → labelled, decoded, cached splits.

Listing and decoding are separate steps. :func:`list_examples` reads a source's table of contents (file
paths, labels, groups) and checks it, confining every path to the data roots; :func:`decode_images` turns a
list of files into one uint8 tensor in the model's geometry, cached on disk once per machine and
memory-mapped by every worker process.

Labels. An ImageFolder's labels are its subfolder names. A manifest's label column holds class names or
class indices; per split, a column whose values are all class names is read as names, otherwise a column of
integers is read as indices into the class list (so class names ``"1", "2"`` found in an ImageFolder and a
manifest labelled ``1, 2`` agree, and ``0 .. K-1`` means the same either way).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from workers.disk_cache import file_lock, mark_used
from workers.errors import InvalidSpec
from workers.images.paths import confine, spec_error
from workers.images.preprocess import Preprocess

#: The file types an ImageFolder tree is scanned for (torchvision's list, case-insensitive).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
#: Bumped whenever the decoded bytes for the same inputs would change.
_CACHE_VERSION = "decode-v1"
_INT = re.compile(r"[+-]?\d+")
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageFolderSource(BaseModel):
    """``path/<class name>/<image files>`` (nested folders allowed); the class names are the subfolders."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["imagefolder"]
    path: str
    max_per_class: int | None = Field(default=None, ge=1, description="Class-balanced, seeded cap.")


class ManifestSource(BaseModel):
    """A CSV or parquet table with one row per image: its path, its label and, optionally, its group."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "parquet"]
    path: str
    path_column: str = "path"
    label_column: str = Field(default="label", description="Class name (str) or class index (int).")
    group_column: str | None = Field(default=None, description="Group / domain, for worst-group metrics.")
    image_root: str | None = Field(
        default=None, description="Base of relative image paths; default: the manifest's folder."
    )
    max_per_class: int | None = Field(default=None, ge=1, description="Class-balanced, seeded cap.")


DataSource = Annotated[ImageFolderSource | ManifestSource, Field(discriminator="format")]


@dataclass(frozen=True)
class Examples:
    """A listed, not yet decoded split. Paths are absolute, resolved and inside the data roots."""

    paths: list[Path]
    labels: list[int]
    groups: list[int] | None
    group_names: list[str] | None


def _sort_values(values: set[Any]) -> list[str]:
    """Unique label / group values as strings; integers in numeric order, strings lexically."""
    if all(isinstance(v, int) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def _show(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------- ImageFolder


def _folder(src: ImageFolderSource, roots: Sequence[Path], field: str) -> Path:
    root = confine(src.path, roots, field=f"{field}.path", kind="image folder")
    if not root.is_dir():
        raise spec_error(
            f"{field}.path", f"{src.path!r} is not a folder (an ImageFolder is <path>/<class>/<image>)"
        )
    return root


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def _walk_dirs(top: Path) -> Iterator[list[os.DirEntry[str]]]:
    """The non-hidden entries of ``top`` and of every folder below it, one list per folder, depth first in
    name order; symlinked folders are followed, each real folder once. A folder's subfolders are entered
    only after the caller is done with its entries (so a link can be checked before it is followed)."""
    seen: set[str] = set()
    stack = [top]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        with os.scandir(d) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        yield entries
        stack.extend(Path(e.path) for e in reversed(entries) if e.is_dir())


def _walk_images(top: Path, roots: Sequence[Path], field: str) -> Iterator[Path]:
    """Image files under ``top`` in sorted order, symlinks followed (once each) and confined."""
    for entries in _walk_dirs(top):
        for e in entries:
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                yield confine(e.path, roots, field=field, kind="image")


def _list_folder(
    src: ImageFolderSource, classes: Sequence[str], roots: Sequence[Path], field: str
) -> Examples:
    root = _folder(src, roots, field)
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for d in _class_dirs(root):
        files = list(_walk_images(d, roots, f"{field}.path"))
        if not files:
            continue
        if d.name not in index:
            raise spec_error(
                f"{field}.path", f"label {d.name!r} is not one of the classes ({_show(classes)})"
            )
        paths += files
        labels += [index[d.name]] * len(files)
    return Examples(paths, labels, None, None)


# ------------------------------------------------------------------------------------------------ Manifests


@dataclass
class _Table:
    """The columns a manifest is read for, as Python values (``None`` for a missing cell)."""

    paths: list[Any]
    labels: list[Any]
    groups: list[Any] | None


def _check_columns(src: ManifestSource, have: Sequence[str], field: str) -> None:
    wanted = [("path_column", src.path_column), ("label_column", src.label_column)]
    if src.group_column is not None:
        wanted.append(("group_column", src.group_column))
    for param, column in wanted:
        if column not in have:
            raise spec_error(
                f"{field}.{param}",
                f"column {column!r} is not in the manifest {src.path!r} (columns: {_show(list(have))})",
            )


def _read_csv(src: ManifestSource, file: Path, field: str) -> _Table:
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _check_columns(src, reader.fieldnames or [], field)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise spec_error(f"{field}.path", f"cannot read the CSV manifest {src.path!r}: {e}") from None

    def column(name: str, typed: bool) -> list[Any]:
        values = [r[name].strip() if isinstance(r.get(name), str) else None for r in rows]
        # CSV has no types: a column of integer literals holds integers.
        if typed and all(v is not None and _INT.fullmatch(v) for v in values):
            return [int(v) for v in values]  # type: ignore[arg-type]
        return [v if v else None for v in values]

    group = src.group_column
    return _Table(
        column(src.path_column, False),
        column(src.label_column, True),
        column(group, True) if group is not None else None,
    )


def _read_parquet(src: ManifestSource, file: Path, field: str) -> _Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise spec_error(
            f"{field}.format", "reading parquet manifests needs pyarrow: pip install autoft-service[parquet]"
        ) from None
    try:
        _check_columns(src, pq.read_schema(file).names, field)
        names = [src.path_column, src.label_column] + ([src.group_column] if src.group_column else [])
        table = pq.read_table(file, columns=list(dict.fromkeys(names)))
    except InvalidSpec:
        raise
    except Exception as e:  # pyarrow raises its own hierarchy (ArrowInvalid, ...) on bad files
        raise spec_error(f"{field}.path", f"cannot read the parquet manifest {src.path!r}: {e}") from None
    group = src.group_column
    return _Table(
        table.column(src.path_column).to_pylist(),
        table.column(src.label_column).to_pylist(),
        table.column(group).to_pylist() if group is not None else None,
    )


def _read_manifest(src: ManifestSource, roots: Sequence[Path], field: str) -> tuple[Path, _Table]:
    file = confine(src.path, roots, field=f"{field}.path", kind="manifest")
    if not file.is_file():
        raise spec_error(f"{field}.path", f"manifest {src.path!r} is not a file")
    table = _read_csv(src, file, field) if src.format == "csv" else _read_parquet(src, file, field)
    for name, values in (("label", table.labels), ("group", table.groups or [])):
        for i, v in enumerate(values):
            if v is None or isinstance(v, bool) or not isinstance(v, int | str):
                what = "is missing" if v is None else f"{v!r} is neither a string nor an integer"
                raise spec_error(f"{field}.path", f"row {i + 1} of {src.path!r}: the {name} {what}")
    return file, table


def _label_indices(labels: list[Any], classes: Sequence[str], where: str, field: str) -> list[int]:
    index = {c: i for i, c in enumerate(classes)}
    if all(str(v) in index for v in labels):
        return [index[str(v)] for v in labels]
    if all(isinstance(v, int) for v in labels):
        for i, v in enumerate(labels):
            if not 0 <= v < len(classes):
                raise spec_error(
                    field, f"row {i + 1} of {where}: label {v} is not a class index (0..{len(classes) - 1})"
                )
        return list(labels)
    first = next(v for v in labels if str(v) not in index)
    raise spec_error(field, f"label {str(first)!r} in {where} is not one of the classes ({_show(classes)})")


def _list_manifest(
    src: ManifestSource, classes: Sequence[str], roots: Sequence[Path], field: str
) -> Examples:
    file, table = _read_manifest(src, roots, field)
    base = file.parent
    if src.image_root is not None:
        base = confine(
            src.image_root, roots, field=f"{field}.image_root", base=file.parent, kind="image root"
        )
    paths: list[Path] = []
    missing: list[tuple[int, str]] = []
    for i, raw in enumerate(table.paths):
        if not isinstance(raw, str) or not raw:
            raise spec_error(f"{field}.path", f"row {i + 1} of {src.path!r}: the image path is missing")
        p = confine(
            raw, roots, field=f"{field}.path", base=base, must_exist=False, kind=f"image (row {i + 1})"
        )
        if not p.is_file():
            missing.append((i, raw))
        paths.append(p)
    if missing:
        row, raw = missing[0]
        raise spec_error(
            f"{field}.path",
            f"{len(missing)} of the {len(paths)} images listed in {src.path!r} do not exist; "
            f"the first is {raw!r} (row {row + 1}, {paths[row]})",
        )
    labels = _label_indices(table.labels, classes, repr(src.path), f"{field}.path")
    if table.groups is None:
        return Examples(paths, labels, None, None)
    group_names = _sort_values(set(table.groups))
    gindex = {g: i for i, g in enumerate(group_names)}
    return Examples(paths, labels, [gindex[str(g)] for g in table.groups], group_names)


# ------------------------------------------------------------------------------------------------ Public API


def discover_classes(src: DataSource, roots: Sequence[Path], *, field: str) -> list[str]:
    """The classes a source defines, in label order: an ImageFolder's sorted subfolder names, a manifest's
    sorted unique label values as strings (integers in numeric order). At least two are required."""
    if isinstance(src, ImageFolderSource):
        classes = [d.name for d in _class_dirs(_folder(src, roots, field))]
    else:
        _, table = _read_manifest(src, roots, field)
        classes = _sort_values(set(table.labels))
    if len(classes) < 2:
        found = f"only {_show(classes)}" if classes else "none"
        raise spec_error(f"{field}.path", f"at least 2 classes are needed to classify; found {found}")
    return classes


def list_examples(
    src: DataSource, classes: Sequence[str], roots: Sequence[Path], *, field: str, seed: int = 0
) -> Examples:
    """List a source's images and map its labels onto ``classes``.

    Every path (the folder or manifest, the manifest's image root and every image it names) is confined to
    ``roots``; an image outside them, a missing image, an unknown label, a missing column or an empty split
    raises :class:`InvalidSpec` naming ``field``'s sub-field at fault. ``max_per_class`` keeps a
    class-balanced, ``seed``-determined subset (in listing order).
    """
    if isinstance(src, ImageFolderSource):
        ex = _list_folder(src, classes, roots, field)
    else:
        ex = _list_manifest(src, classes, roots, field)
    if not ex.paths:
        raise spec_error(f"{field}.path", f"{src.path!r} holds no images")
    if src.max_per_class is not None:
        keep = _cap_per_class(ex.labels, src.max_per_class, seed)
        ex = Examples(
            [ex.paths[i] for i in keep],
            [ex.labels[i] for i in keep],
            [ex.groups[i] for i in keep] if ex.groups is not None else None,
            ex.group_names,
        )
    return ex


def check_source(src: DataSource, roots: Sequence[Path], *, field: str) -> None:
    """The checks of a source cheap enough for submission; no image is opened or decoded.

    - The folder or manifest exists inside ``roots`` (symlinks followed).
    - ImageFolder: every symlink in the tree (class folders, images, anything not hidden) resolves inside
      ``roots``; the walk reads directory entries only.
    - Manifest: it is readable, has the named columns and a label (and group) on every row, its
      ``image_root`` lies inside ``roots``, and every row's image path resolves inside ``roots`` (whether
      the images exist is checked when the job prepares its data).

    An error is :class:`InvalidSpec` naming ``field``'s sub-field, with the same message whether a path
    outside the roots exists or not."""
    if isinstance(src, ImageFolderSource):
        _confine_links(_folder(src, roots, field), roots, f"{field}.path")
        return
    file, table = _read_manifest(src, roots, field)
    base = file.parent
    if src.image_root is not None:
        base = confine(
            src.image_root, roots, field=f"{field}.image_root", base=file.parent, kind="image root"
        )
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    parents: dict[str, Path] = {}  # rows share a few folders: resolve each folder once
    for i, raw in enumerate(table.paths):
        if not isinstance(raw, str) or not raw:
            raise spec_error(f"{field}.path", f"row {i + 1} of {src.path!r}: the image path is missing")
        joined = os.path.join(base, raw)
        if "\x00" not in joined and ".." not in Path(joined).parts:
            folder, name = os.path.split(joined)
            if folder not in parents:
                parents[folder] = Path(os.path.realpath(folder))
            real = parents[folder] / name
            if os.path.islink(real):
                real = Path(os.path.realpath(real))
            if any(real.is_relative_to(r) for r in real_roots):
                continue
        # outside (or not simple): the one check that says why, with the one message
        confine(raw, roots, field=f"{field}.path", base=base, must_exist=False, kind=f"image (row {i + 1})")


def _confine_links(top: Path, roots: Sequence[Path], field: str) -> None:
    """Every non-hidden symlink under ``top`` resolves inside ``roots``; symlinked folders are walked too."""
    for entries in _walk_dirs(top):
        for e in entries:
            if e.is_symlink():  # checked before its target is looked at (the walk follows it only later)
                confine(e.path, roots, field=field, must_exist=False, kind="symlink")


def _by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        out.setdefault(y, []).append(i)
    return dict(sorted(out.items()))


def _pick(rng: np.random.Generator, idx: list[int], k: int) -> list[int]:
    return idx if k >= len(idx) else [idx[j] for j in rng.choice(len(idx), size=k, replace=False)]


def _cap_per_class(labels: Sequence[int], cap: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(i for idx in _by_class(labels).values() for i in _pick(rng, idx, cap))


def class_balanced_subsample(labels: Sequence[int], size: int, seed: int) -> list[int]:
    """Sorted indices of ``size`` examples with per-class counts as equal as possible.

    A class with fewer examples than its share gives all it has and the rest is spread over the others, so
    every class either gives all its examples or is within one of the largest count. Which classes get the
    leftover +1s and which examples are taken are fixed by ``seed``. ``size >= len(labels)``: every index.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if size >= len(labels):
        return list(range(len(labels)))
    groups = _by_class(labels)
    counts = {y: len(idx) for y, idx in groups.items()}
    # Water-filling: the largest level L with sum(min(count, L)) <= size, then +1 for `size - sum` classes.
    lo, hi = 0, max(counts.values())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in counts.values()) <= size:
            lo = mid
        else:
            hi = mid - 1
    quota = {y: min(c, lo) for y, c in counts.items()}
    rng = np.random.default_rng(seed)
    room = [y for y, c in counts.items() if c > lo]
    extra = size - sum(quota.values())
    for j in rng.choice(len(room), size=extra, replace=False):
        quota[room[j]] += 1
    return sorted(i for y, idx in groups.items() for i in _pick(rng, idx, quota[y]))


# ----------------------------------------------------------------------------------------------- Decoding


def _decode_one(path: Path, pre: Preprocess, field: str | None) -> np.ndarray:
    """One image → uint8 [3, H, W]: shorter side to ``resize`` (torchvision's rounding), centre crop
    (zero padding where the crop is larger than the image, as torchvision's ``CenterCrop``)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        msg = f"cannot decode image {str(path)!r}: {e}"
        raise InvalidSpec(f"{field}: {msg}" if field else msg, field=field) from None
    w, h = rgb.size
    size = (pre.resize, int(pre.resize * h / w)) if w <= h else (int(pre.resize * w / h), pre.resize)
    if size != (w, h):
        rgb = rgb.resize(size, resample=_RESAMPLE[pre.interpolation])
    arr = np.asarray(rgb, dtype=np.uint8)  # [h, w, 3]
    ch, cw = pre.input_size
    h, w = arr.shape[:2]
    if ch > h or cw > w:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        arr = np.pad(arr, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return arr[top : top + ch, left : left + cw].transpose(2, 0, 1)


def image_cache_key(paths: Sequence[Path], pre: Preprocess, field: str | None = None) -> str:
    """The cache key of ``paths`` decoded in ``pre``'s geometry, as :func:`decode_images` uses it: it changes
    with the decoder, the geometry and every file's path, size and modification time, so entries derived
    from the decoded images (corrupted copies) can be keyed by it too."""
    h = hashlib.sha256(f"{_CACHE_VERSION}\0{pre.geometry_key()}\0".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            msg = f"cannot read image {str(p)!r}: {e.strerror}"
            raise InvalidSpec(f"{field}: {msg}" if field else msg, field=field) from None
        h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _open_cached(file: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        arr = np.load(file, mmap_mode="r")
    except (OSError, ValueError):  # absent, or not a complete .npy: decode again
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    # The pages are shared read-only by every process; torch warns that the tensor is not writable.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The given NumPy array is not writable", category=UserWarning
        )
        return torch.from_numpy(arr)


def _fill(out: np.ndarray, paths: Sequence[Path], decode: Callable[[Path], np.ndarray], workers: int) -> None:
    if workers <= 1:
        for i, p in enumerate(paths):
            out[i] = decode(p)
        return
    chunk = 64 * workers  # bounds the futures in flight
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for start in range(0, len(paths), chunk):
            batch = paths[start : start + chunk]
            for j, img in enumerate(pool.map(decode, batch)):
                out[start + j] = img


def decode_images(
    paths: Sequence[Path],
    preprocess: Preprocess,
    cache_dir: Path,
    *,
    workers: int = 1,
    field: str | None = None,
) -> torch.Tensor:
    """Decode ``paths`` into a uint8 tensor ``[N, 3, H, W]`` in ``preprocess``'s geometry, cached on disk.

    The cache entry (see :func:`cached_images`) is keyed by :func:`image_cache_key`: the geometry and every
    file's path, size and modification time. The returned tensor is a read-only memory map: never modify it
    in place (copy, or move it to a device, first). ``workers > 1`` decodes in threads. An unreadable image
    raises :class:`InvalidSpec` naming the file (and ``field``, when given).
    """
    h, w = preprocess.input_size
    shape = (len(paths), 3, h, w)
    if not paths:
        return torch.empty(shape, dtype=torch.uint8)
    key = image_cache_key(paths, preprocess, field)

    def fill(out: np.ndarray) -> None:
        _fill(out, paths, lambda p: _decode_one(p, preprocess, field), workers)

    return cached_images(cache_dir, key, shape, fill)


def cached_images(
    cache_dir: Path, key: str, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]
) -> torch.Tensor:
    """The uint8 array ``cache_dir/images/<key>.npy`` of ``shape``, written by ``fill`` first if absent.

    ``fill`` writes every element of the (memory-mapped) array it is given. The entry is written once,
    atomically, under a file lock (processes that ask at the same time wait for the first instead of
    computing too), then memory-mapped read-only, so every process on the machine shares the same pages.
    The returned tensor is a view of that mapping: never modify it in place."""
    folder = Path(cache_dir) / "images"
    file = folder / f"{key}.npy"
    cached = _open_cached(file, shape)
    if cached is not None:
        mark_used(file)
        return _as_tensor(cached)
    with file_lock(Path(cache_dir) / "locks" / f"images-{key}.lock"):
        cached = _open_cached(file, shape)  # written by another process while this one waited
        if cached is not None:
            return _as_tensor(cached)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{file.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            fill(out)
            out.flush()
            del out
            os.replace(tmp, file)
        finally:
            tmp.unlink(missing_ok=True)
    arr = _open_cached(file, shape)
    if arr is None:  # pragma: no cover - only if another process wrote a broken file in between
        raise RuntimeError(f"image cache {file} was replaced by an unreadable file")
    return _as_tensor(arr)
