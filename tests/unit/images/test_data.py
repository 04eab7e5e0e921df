"""Dataset adapters: listing (ImageFolder, CSV, parquet), labels, confinement, subsampling, decoding and its
on-disk cache, and the synthetic dataset generators."""

from __future__ import annotations

import csv
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from autoft_service.errors import InvalidSpec
from workers.images import data
from workers.images.data import (
    DataSource,
    ImageFolderSource,
    ManifestSource,
    class_balanced_subsample,
    decode_images,
    discover_classes,
    list_examples,
)
from workers.images.preprocess import Preprocess
from workers.images.synthetic_data import SHIFTS, make_image_folder, make_manifest

FIELD = "task.params.data.id_train"
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The one data root; ``tmp_path / "outside"`` is outside it."""
    r = tmp_path / "root"
    r.mkdir()
    return r


def folder(path: Path, **kw: Any) -> ImageFolderSource:
    return ImageFolderSource(format="imagefolder", path=str(path), **kw)


def manifest(path: Path, **kw: Any) -> ManifestSource:
    return ManifestSource(format="parquet" if path.suffix == ".parquet" else "csv", path=str(path), **kw)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def invalid(fn: Callable[[], Any]) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        fn()
    return e.value


# ------------------------------------------------------------------------------------------------- Listing


def test_image_folder_lists_every_class_in_order(root: Path) -> None:
    make_image_folder(root / "train", CLASSES, 4, size=16)
    (root / "train" / ".cache").mkdir()  # hidden folders are not classes
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    src = folder(root / "train")
    classes = discover_classes(src, [root], field=FIELD)
    ex = list_examples(src, classes, [root], field=FIELD)
    assert classes == CLASSES
    assert ex.labels == [0] * 4 + [1] * 4 + [2] * 4
    assert ex.groups is None and ex.group_names is None
    assert all(p.is_absolute() and p.is_file() and p.suffix == ".png" for p in ex.paths)
    assert [p.parent.name for p in ex.paths] == [CLASSES[y] for y in ex.labels]


def test_image_folder_maps_onto_the_given_class_order_and_rejects_unknown_classes(root: Path) -> None:
    make_image_folder(root / "test", ["dog", "cat"], 2, size=16)
    ex = list_examples(folder(root / "test"), ["dog", "cat", "fox"], [root], field=FIELD)
    assert ex.labels == [1, 1, 0, 0]  # folders are listed sorted (cat, dog), labels follow `classes`
    err = invalid(lambda: list_examples(folder(root / "test"), ["dog", "fox"], [root], field=FIELD))
    assert err.field == f"{FIELD}.path"
    assert "label 'cat' is not one of the classes" in err.message
    assert err.message.startswith(f"{FIELD}.path: ")


def test_max_per_class_is_balanced_seeded_and_deterministic(root: Path) -> None:
    make_image_folder(root / "train", CLASSES, 6, size=16)
    src = folder(root / "train", max_per_class=2)
    a = list_examples(src, CLASSES, [root], field=FIELD, seed=0)
    b = list_examples(src, CLASSES, [root], field=FIELD, seed=0)
    others = [list_examples(src, CLASSES, [root], field=FIELD, seed=s).paths for s in range(1, 6)]
    assert Counter(a.labels) == {0: 2, 1: 2, 2: 2}
    assert a == b
    assert any(o != a.paths for o in others)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_lists_paths_labels_and_groups(root: Path, suffix: str) -> None:
    path = make_manifest(root / f"ood{suffix}", root / "ood", CLASSES, 4, size=16, groups=True)
    src = manifest(path, group_column="group")
    assert discover_classes(src, [root], field=FIELD) == CLASSES
    ex = list_examples(src, ["fox", "dog", "cat"], [root], field=FIELD)
    assert ex.labels == [2] * 4 + [1] * 4 + [0] * 4
    assert ex.group_names == ["dark", "light"]
    assert ex.groups == [0, 1, 0, 1] * 3
    assert all(p.is_absolute() and p.is_file() and p.is_relative_to(root / "ood") for p in ex.paths)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_labels_are_class_indices(root: Path, suffix: str) -> None:
    path = make_manifest(root / f"m{suffix}", root / "img", CLASSES, 2, size=16, int_labels=True)
    assert discover_classes(manifest(path), [root], field=FIELD) == ["0", "1", "2"]
    ex = list_examples(manifest(path), ["zero", "one", "two"], [root], field=FIELD)
    assert ex.labels == [0, 0, 1, 1, 2, 2]
    err = invalid(lambda: list_examples(manifest(path), ["zero", "one"], [root], field=FIELD))
    assert err.field == f"{FIELD}.path"
    assert "label 2 is not a class index (0..1)" in err.message


def test_integer_labels_naming_numeric_classes_match_by_name(root: Path) -> None:
    make_image_folder(root / "img", ["a"], 3, size=16)
    files = sorted((root / "img" / "a").iterdir())
    path = write_csv(
        root / "m.csv",
        [{"path": f"img/a/{f.name}", "label": y} for f, y in zip(files, [10, 2, 1], strict=True)],
    )
    classes = discover_classes(manifest(path), [root], field=FIELD)
    assert classes == ["1", "2", "10"]  # numeric order, not "1", "10", "2"
    assert list_examples(manifest(path), classes, [root], field=FIELD).labels == [2, 1, 0]


def test_unknown_string_label_is_reported(root: Path) -> None:
    path = make_manifest(root / "m.csv", root / "img", ["cat", "x"], 1, size=16)
    err = invalid(lambda: list_examples(manifest(path), ["cat", "dog"], [root], field=FIELD))
    assert err.field == f"{FIELD}.path"
    assert err.message.startswith(f"{FIELD}.path: label 'x'")
    assert "is not one of the classes" in err.message


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(("param", "column"), [("label_column", "species"), ("group_column", "domain")])
def test_missing_column_names_the_column_and_field(root: Path, suffix: str, param: str, column: str) -> None:
    path = make_manifest(root / f"m{suffix}", root / "img", CLASSES, 1, size=16)
    err = invalid(lambda: list_examples(manifest(path, **{param: column}), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.{param}"
    assert repr(column) in err.message and "columns: 'path', 'label'" in err.message


def test_missing_label_cell_is_reported(root: Path) -> None:
    make_image_folder(root / "img", ["a"], 2, size=16)
    path = write_csv(
        root / "m.csv",
        [{"path": "img/a/00000.png", "label": "cat"}, {"path": "img/a/00001.png", "label": ""}],
    )
    err = invalid(lambda: list_examples(manifest(path), CLASSES, [root], field=FIELD))
    assert "row 2" in err.message and "label is missing" in err.message


def test_image_root_is_the_base_of_relative_paths(root: Path) -> None:
    make_image_folder(root / "pool", ["a"], 2, size=16)
    (root / "lists").mkdir()
    rows = [{"path": "a/00000.png", "label": "cat"}, {"path": "a/00001.png", "label": "dog"}]
    path = write_csv(root / "lists" / "m.csv", rows)
    ex = list_examples(manifest(path, image_root="../pool"), CLASSES, [root], field=FIELD)
    assert ex.paths == [root / "pool" / "a" / "00000.png", root / "pool" / "a" / "00001.png"]
    assert ex.labels == [0, 1]
    err = invalid(lambda: list_examples(manifest(path), CLASSES, [root], field=FIELD))
    assert "2 of the 2 images" in err.message and "a/00000.png" in err.message


def test_parquet_without_pyarrow_says_what_to_install(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_manifest(root / "m.parquet", root / "img", CLASSES, 1, size=16)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    err = invalid(lambda: list_examples(manifest(path), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.format"
    assert "pip install autoft-service[parquet]" in err.message


def test_empty_split_and_single_class_are_rejected(root: Path) -> None:
    (root / "empty" / "cat").mkdir(parents=True)
    (root / "empty" / "dog").mkdir()
    err = invalid(lambda: list_examples(folder(root / "empty"), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.path" and "holds no images" in err.message
    make_image_folder(root / "one", ["cat"], 2, size=16)
    err = invalid(lambda: discover_classes(folder(root / "one"), [root], field=FIELD))
    assert "at least 2 classes" in err.message


def test_sources_are_strict_and_discriminated_by_format() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(DataSource)
    assert isinstance(adapter.validate_python({"format": "imagefolder", "path": "x"}), ImageFolderSource)
    src = adapter.validate_python({"format": "parquet", "path": "m.parquet", "group_column": "g"})
    assert isinstance(src, ManifestSource) and src.label_column == "label"
    for bad in (
        {"format": "imagefolder", "path": "x", "label_column": "y"},  # a manifest-only field
        {"format": "csv", "path": "m.csv", "colour": "red"},
        {"format": "tfrecord", "path": "x"},
        {"format": "imagefolder", "path": "x", "max_per_class": 0},
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# --------------------------------------------------------------------------------------------- Confinement


def test_folder_outside_the_roots_is_rejected(root: Path, tmp_path: Path) -> None:
    make_image_folder(tmp_path / "outside", CLASSES, 1, size=16)
    src = folder(tmp_path / "outside")
    for fn in (
        lambda: discover_classes(src, [root], field=FIELD),
        lambda: list_examples(src, CLASSES, [root], field=FIELD),
    ):
        err = invalid(fn)
        assert err.field == f"{FIELD}.path"
        assert "outside the data roots" in err.message


def test_symlinked_image_in_a_folder_is_rejected(root: Path, tmp_path: Path) -> None:
    make_image_folder(tmp_path / "outside", ["cat"], 1, size=16)
    make_image_folder(root / "train", CLASSES, 1, size=16)
    os.symlink(tmp_path / "outside" / "cat" / "00000.png", root / "train" / "dog" / "leak.png")
    err = invalid(lambda: list_examples(folder(root / "train"), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.path" and "leak.png" in err.message and "outside" in err.message


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_manifest_cannot_name_an_image_outside_the_roots(root: Path, tmp_path: Path, how: str) -> None:
    secret = make_image_folder(tmp_path / "outside", ["cat"], 1, size=16) / "cat" / "00000.png"
    make_image_folder(root / "img", ["cat"], 1, size=16)
    if how == "absolute":
        named = str(secret)
    elif how == "dotdot":
        named = "../outside/cat/00000.png"
    else:
        os.symlink(secret, root / "img" / "link.png")
        named = "img/link.png"
    assert (root / named).resolve().is_file()  # the file exists: only confinement stops it
    rows = [{"path": "img/cat/00000.png", "label": "cat"}, {"path": named, "label": "dog"}]
    path = write_csv(root / "m.csv", rows)
    err = invalid(lambda: list_examples(manifest(path), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.path"
    assert "outside the data roots" in err.message and "row 2" in err.message


def test_image_root_outside_the_roots_is_rejected(root: Path, tmp_path: Path) -> None:
    make_image_folder(tmp_path / "outside", ["a"], 1, size=16)
    path = write_csv(root / "m.csv", [{"path": "a/00000.png", "label": "cat"}])
    err = invalid(
        lambda: list_examples(
            manifest(path, image_root=str(tmp_path / "outside")), CLASSES, [root], field=FIELD
        )
    )
    assert err.field == f"{FIELD}.image_root"


def test_missing_images_are_reported_with_the_first_one(root: Path) -> None:
    make_image_folder(root / "img", ["a"], 3, size=16)
    (root / "img" / "a" / "00001.png").unlink()
    (root / "img" / "a" / "00002.png").unlink()
    path = write_csv(root / "m.csv", [{"path": f"img/a/{i:05d}.png", "label": "cat"} for i in range(3)])
    err = invalid(lambda: list_examples(manifest(path), CLASSES, [root], field=FIELD))
    assert err.field == f"{FIELD}.path"
    assert "2 of the 3 images" in err.message and "'img/a/00001.png' (row 2" in err.message


# -------------------------------------------------------------------------------------- Balanced subsample


def per_class(labels: list[int], idx: list[int]) -> Counter[int]:
    return Counter(labels[i] for i in idx)


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), max_size=60),
    size=st.integers(0, 70),
    seed=st.integers(0, 3),
)
def test_class_balanced_subsample_properties(labels: list[int], size: int, seed: int) -> None:
    idx = class_balanced_subsample(labels, size, seed)
    assert idx == sorted(set(idx)) and all(0 <= i < len(labels) for i in idx)
    assert len(idx) == min(size, len(labels))
    assert idx == class_balanced_subsample(labels, size, seed)
    got, have = per_class(labels, idx), Counter(labels)
    top = max(got.values(), default=0)
    # Every class gives all it has or is within one of the largest count.
    assert all(got[y] == have[y] or got[y] >= top - 1 for y in have)


def test_class_balanced_subsample_spreads_what_small_classes_cannot_give() -> None:
    labels = [0] * 2 + [1] * 10 + [2] * 10 + [3] * 7
    assert per_class(labels, class_balanced_subsample(labels, 14, seed=0)) == {0: 2, 1: 4, 2: 4, 3: 4}
    counts = per_class(labels, class_balanced_subsample(labels, 23, seed=0))
    assert counts[0] == 2 and counts[3] == 7 and sorted([counts[1], counts[2]]) == [7, 7]
    picks = {tuple(class_balanced_subsample(labels, 9, seed=s)) for s in range(8)}
    assert len(picks) > 1  # the seed decides which examples
    assert class_balanced_subsample(labels, 100, seed=0) == list(range(len(labels)))
    with pytest.raises(ValueError):
        class_balanced_subsample(labels, -1, seed=0)


# ------------------------------------------------------------------------------------------------ Decoding

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def bands(h: int, w: int, horizontal: bool) -> np.ndarray:
    """Red with a green middle half (columns, or rows when not ``horizontal``)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = RED
    if horizontal:
        arr[:, w // 4 : 3 * w // 4] = GREEN
    else:
        arr[h // 4 : 3 * h // 4, :] = GREEN
    return arr


def colours(x: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(c) for c in x.permute(1, 2, 0).reshape(-1, 3).tolist()}


def test_decode_resizes_the_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    wide = save(tmp_path / "wide.png", bands(20, 40, horizontal=True))
    tall = save(tmp_path / "tall.jpg", bands(40, 20, horizontal=False))
    pre = Preprocess(input_size=(16, 16), resize=16, interpolation="nearest")
    x = decode_images([wide, wide], pre, tmp_path / "cache")
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.uint8
    assert colours(x[0]) == {GREEN}  # 40x20 → 32x16, the centre 16 columns are the green band
    # A wider input keeps the red edges: 32x16 is the whole resized image.
    x = decode_images(
        [wide], Preprocess(input_size=(16, 32), resize=16, interpolation="nearest"), tmp_path / "c"
    )
    assert x.shape == (1, 3, 16, 32)
    assert colours(x[0, :, :, :8]) == {RED} and colours(x[0, :, :, 8:24]) == {GREEN}
    y = decode_images(
        [tall], Preprocess(input_size=(16, 16), resize=16, interpolation="bilinear"), tmp_path / "c"
    )
    r, g, _ = y[0].int()
    assert (g > r + 100).all()  # JPEG, bilinear: green everywhere (not exactly), no red band left


def test_decode_pads_a_crop_larger_than_the_image_with_zeros(tmp_path: Path) -> None:
    img = save(tmp_path / "sq.png", np.full((20, 20, 3), 200, np.uint8))
    x = decode_images(
        [img], Preprocess(input_size=(16, 24), resize=16, interpolation="nearest"), tmp_path / "c"
    )
    assert x.shape == (1, 3, 16, 24)
    assert x[0, :, :, :4].max() == 0 and x[0, :, :, 20:].max() == 0 and x[0, :, :, 4:20].min() == 200


def test_decode_matches_torchvision_eval_transform(tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    paths = [
        save(tmp_path / f"{i}.png", rng.integers(0, 256, (h, w, 3)))
        for i, (h, w) in enumerate([(23, 37), (41, 19)])
    ]
    pre = Preprocess.from_crop_pct((16, 16), crop_pct=0.875, interpolation="bicubic")
    ref = tv.Compose(
        [
            tv.Resize(pre.resize, interpolation=tv.InterpolationMode.BICUBIC),
            tv.CenterCrop(16),
            tv.PILToTensor(),
        ]
    )
    x = decode_images(paths, pre, tmp_path / "c")
    for i, p in enumerate(paths):
        assert torch.equal(x[i], ref(Image.open(p).convert("RGB")))


@pytest.fixture
def synthetic(tmp_path: Path) -> list[Path]:
    root = make_image_folder(tmp_path / "imgs", CLASSES, 8, size=24)
    return sorted(root.rglob("*.png"))


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    opened: list[Path] = []
    real = data.Image.open

    def counting(fp: Any, *a: Any, **kw: Any) -> Any:
        opened.append(Path(fp))
        return real(fp, *a, **kw)

    monkeypatch.setattr(data.Image, "open", counting)
    return opened


def test_decode_is_cached_on_disk_and_memory_mapped(
    tmp_path: Path, synthetic: list[Path], count_opens: list[Path]
) -> None:
    pre, cache = Preprocess(input_size=(16, 16), resize=18), tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "array is not writable" warning either time
        first = decode_images(synthetic, pre, cache)
        assert len(count_opens) == len(synthetic)
        second = decode_images(synthetic, pre, cache)
    assert len(count_opens) == len(synthetic)  # not decoded again
    assert torch.equal(first, second)
    files = list((cache / "images").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and not files[0].name.startswith(".")  # no tmp left
    # The tensor is a view of the file's pages, not a copy: a change to the file shows through.
    last = int(second[-1, -1, -1, -1])
    with open(files[0], "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(bytes([255 - last]))
    assert int(second[-1, -1, -1, -1]) == 255 - last


def test_a_decode_cache_hit_renews_the_entry_for_pruning(tmp_path: Path, synthetic: list[Path]) -> None:
    pre, cache = Preprocess(input_size=(16, 16), resize=18), tmp_path / "cache"
    decode_images(synthetic, pre, cache)
    (entry,) = (cache / "images").glob("*.npy")
    os.utime(entry, (1e9, 1e9))  # 2001
    decode_images(synthetic, pre, cache)
    assert time.time() - entry.stat().st_mtime < 60


def test_processes_asking_at_once_decode_once(
    tmp_path: Path, synthetic: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers that find no cache entry at the same time: one decodes, the other waits and maps it."""
    decoded: list[Path] = []
    real = data._decode_one

    def slow(path: Path, *a: Any, **kw: Any) -> Any:
        decoded.append(path)
        time.sleep(0.02)
        return real(path, *a, **kw)

    monkeypatch.setattr(data, "_decode_one", slow)
    pre, cache = Preprocess(input_size=(16, 16), resize=18), tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:  # flock locks conflict between two opens, in one process too
        a, b = pool.map(lambda _: decode_images(synthetic, pre, cache), range(2))
    assert len(decoded) == len(synthetic)
    assert torch.equal(a, b)


def test_decode_cache_depends_on_geometry_and_files(
    tmp_path: Path, synthetic: list[Path], count_opens: list[Path]
) -> None:
    pre, cache = Preprocess(input_size=(16, 16), resize=18), tmp_path / "cache"
    before = decode_images(synthetic, pre, cache)
    decode_images(synthetic, Preprocess(input_size=(16, 16), resize=18, mean=(0.5, 0.5, 0.5)), cache)
    assert len(count_opens) == len(synthetic)  # mean/std are not part of decoding
    decode_images(synthetic, Preprocess(input_size=(12, 12), resize=12), cache)
    assert len(count_opens) == 2 * len(synthetic)
    st_ = synthetic[0].stat()
    os.utime(synthetic[0], ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    decode_images(synthetic, pre, cache)
    assert len(count_opens) == 3 * len(synthetic)
    save(synthetic[1], np.zeros((24, 24, 3), np.uint8))
    after = decode_images(synthetic, pre, cache)
    assert torch.equal(after[0], before[0]) and after[1].max() == 0 and before[1].max() > 0
    assert len(list((cache / "images").iterdir())) == 4


def test_thread_workers_give_identical_output(tmp_path: Path, synthetic: list[Path]) -> None:
    pre = Preprocess(input_size=(16, 16), resize=20, interpolation="bicubic")
    one = decode_images(synthetic, pre, tmp_path / "a", workers=1)
    three = decode_images(synthetic, pre, tmp_path / "b", workers=3)
    assert torch.equal(one.clone(), three.clone())
    assert len(torch.unique(one.float().mean(dim=(1, 2, 3)))) > len(synthetic) // 2  # images differ


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_is_reported_by_name(tmp_path: Path, synthetic: list[Path], workers: int) -> None:
    bad = synthetic[5]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cache = tmp_path / "cache"
    pre = Preprocess(input_size=(16, 16), resize=16)
    with pytest.raises(InvalidSpec) as e:
        decode_images(synthetic, pre, cache, workers=workers, field=f"{FIELD}.path")
    assert str(bad) in e.value.message and e.value.field == f"{FIELD}.path"
    assert list((cache / "images").iterdir()) == []  # neither a cache entry nor a tmp file is left


def test_decoding_nothing_gives_an_empty_batch(tmp_path: Path) -> None:
    x = decode_images([], Preprocess(input_size=(8, 12), resize=8), tmp_path / "c")
    assert x.shape == (0, 3, 8, 12) and x.dtype == torch.uint8


# ---------------------------------------------------------------------------------------- Synthetic images


def load_folder(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            xs.append(np.asarray(Image.open(f), np.float32).ravel())
            ys.append(k)
    return np.stack(xs), np.array(ys)


def nearest_class_mean_accuracy(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> float:
    (xtr, ytr), (xte, yte) = train, test
    means = np.stack([xtr[ytr == k].mean(0) for k in np.unique(ytr)])
    pred = ((xte[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == yte).mean())


def test_synthetic_classes_are_learnable_and_color_shift_hurts(tmp_path: Path) -> None:
    classes = ["a", "b", "c", "d"]
    train = load_folder(make_image_folder(tmp_path / "train", classes, 12, size=16, seed=0), classes)
    test = load_folder(make_image_folder(tmp_path / "test", classes, 12, size=16, seed=1), classes)
    shifted = load_folder(
        make_image_folder(tmp_path / "ood", classes, 12, size=16, seed=1, shift="color", severity=1.0),
        classes,
    )
    clean = nearest_class_mean_accuracy(train, test)
    assert clean >= 0.8  # chance is 0.25
    assert nearest_class_mean_accuracy(train, shifted) < clean - 0.3


def test_synthetic_images_are_deterministic_and_shifts_change_them(tmp_path: Path) -> None:
    classes = ["a", "b"]
    base, _ = load_folder(make_image_folder(tmp_path / "clean", classes, 3, size=16, seed=7), classes)
    again, _ = load_folder(make_image_folder(tmp_path / "again", classes, 3, size=16, seed=7), classes)
    other, _ = load_folder(make_image_folder(tmp_path / "other", classes, 3, size=16, seed=8), classes)
    assert np.array_equal(base, again) and not np.array_equal(base, other)
    for shift in SHIFTS:
        mild, _ = load_folder(
            make_image_folder(tmp_path / f"{shift}1", classes, 3, size=16, seed=7, shift=shift, severity=0.2),
            classes,
        )
        hard, _ = load_folder(
            make_image_folder(tmp_path / f"{shift}2", classes, 3, size=16, seed=7, shift=shift, severity=0.9),
            classes,
        )
        d_mild, d_hard = np.abs(mild - base).mean(), np.abs(hard - base).mean()
        assert 1.0 < d_mild < d_hard, shift
    with pytest.raises(ValueError, match="unknown shift"):
        make_image_folder(tmp_path / "x", classes, 1, shift="fog")


def test_manifest_paths_are_relative_to_the_manifest(root: Path) -> None:
    path = make_manifest(
        root / "lists" / "m.csv", root / "images" / "ood", CLASSES, 2, size=16, shift="blur", groups=True
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "group"]
    assert all(r["path"].startswith("../images/ood/") for r in rows)
    assert [r["label"] for r in rows] == [c for c in CLASSES for _ in range(2)]
    ex = list_examples(manifest(path, group_column="group"), CLASSES, [root], field=FIELD)
    assert len(ex.paths) == 6 and ex.group_names == ["dark", "light"]


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 5000, "~nouser/x"])
def test_unusable_paths_are_spec_errors_not_crashes(tmp_path: Path, bad: str) -> None:
    from workers.images.paths import confine

    with pytest.raises(InvalidSpec) as e:
        confine(bad, [tmp_path], field="task.params.data.id_train.path")
    assert e.value.field == "task.params.data.id_train.path"


def test_data_roots_are_given_never_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.images.task import ImageClassificationTask, ImageTaskParams
    from workers.images.tiny_models import save_tiny_timm

    (tmp_path / "train").mkdir()
    save_tiny_timm(tmp_path / "m")
    src = {"format": "imagefolder", "path": str(tmp_path / "train")}
    raw = {"model": {"family": "timm", "path": str(tmp_path / "m")},
           "data": {"id_train": src, "id_test": src, "ood_val": src}}  # fmt: skip
    monkeypatch.setenv("AUTOFT_DATA_ROOTS", str(tmp_path))  # the environment widens nothing
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(raw)
    assert "no data roots are configured" in str(e.value)
    with pytest.raises(InvalidSpec, match="no data roots"):
        ImageTaskParams.model_validate(raw)  # no validation context: no roots
    ok = ImageClassificationTask.validate_params(raw, data_roots=[tmp_path])
    assert isinstance(ok, ImageTaskParams) and ok.data.id_train.path == str(tmp_path / "train")
