"""The machine's task cache: entries marked on every hit, pruned by age and size, recomputed after a prune;
and the ``autoft cache`` commands over it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from autoft_service.cli import app, parse_duration, parse_size
from workers.disk_cache import cache_entries, cached_tensor, prune_cache

DAY = 86400.0


def _entry(root: Path, rel: str, size: int, age_days: float, now: float) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    os.utime(p, (now - age_days * DAY, now - age_days * DAY))
    return p


@pytest.fixture()
def cache(tmp_path: Path) -> tuple[Path, float]:
    root, now = tmp_path / "cache", time.time()
    _entry(root, "images/a.npy", 400, 40, now)
    _entry(root, "images/b.npy", 300, 10, now)
    _entry(root, "features/c.pt", 200, 2, now)
    _entry(root, "zeroshot/d.pt", 100, 0.5, now)
    # not entries: a decode being written, a torch.save being written, locks
    _entry(root, "images/.b.123.abc.tmp.npy", 999, 90, now)
    _entry(root, "features/c.123.tmp", 999, 90, now)
    _entry(root, "locks/images-b.lock", 0, 90, now)
    return root, now


def test_entries_are_listed_least_recently_used_first(cache: tuple[Path, float]) -> None:
    root, _ = cache
    entries = cache_entries(root)
    assert [(e.kind, e.path.name, e.size) for e in entries] == [
        ("images", "a.npy", 400),
        ("images", "b.npy", 300),
        ("features", "c.pt", 200),
        ("zeroshot", "d.pt", 100),
    ]


def test_prune_by_age_then_by_size(cache: tuple[Path, float]) -> None:
    root, now = cache
    assert [e.path.name for e in prune_cache(root, older_than_s=7 * DAY, dry_run=True, now=now)] == [
        "a.npy",
        "b.npy",
    ]
    assert len(cache_entries(root)) == 4  # a dry run removes nothing
    removed = prune_cache(root, older_than_s=30 * DAY, max_bytes=250, now=now)
    assert [e.path.name for e in removed] == ["a.npy", "b.npy", "c.pt"]  # a by age; b, c to fit 250 bytes
    assert [e.path.name for e in cache_entries(root)] == ["d.pt"]
    assert (root / "images" / ".b.123.abc.tmp.npy").exists() and (root / "locks" / "images-b.lock").exists()
    assert prune_cache(root, older_than_s=30 * DAY, max_bytes=250, now=now) == []


def test_a_hit_marks_the_entry_used_and_a_pruned_entry_is_recomputed(tmp_path: Path) -> None:
    path, calls = tmp_path / "cache" / "features" / "f.pt", []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(4.0)

    assert torch.equal(cached_tensor(path, compute), torch.arange(4.0))
    os.utime(path, (time.time() - 10 * DAY, time.time() - 10 * DAY))
    assert torch.equal(cached_tensor(path, compute), torch.arange(4.0)) and len(calls) == 1
    assert time.time() - path.stat().st_mtime < 60  # the hit renewed its last use
    assert prune_cache(tmp_path / "cache", older_than_s=DAY) == []
    assert [e.path for e in prune_cache(tmp_path / "cache", max_bytes=0)] == [path]
    assert torch.equal(cached_tensor(path, compute), torch.arange(4.0)) and len(calls) == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("45m", 2700), ("12h", 43200), ("30d", 30 * DAY), ("2w", 14 * DAY)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--older-than") == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("20GB", 20 * 10**9), ("500MiB", 500 * 2**20), ("1.5T", 1.5 * 10**12), ("10kb", 10_000)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text, "--max-size") == size


@pytest.mark.parametrize("bad", ["", "d", "3x", "-1d", "nan d", "infh"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(bad, "--older-than")


@pytest.mark.parametrize("bad", ["", "GB", "12 parsecs", "-5G", "infG"])
def test_bad_sizes_are_refused(bad: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_size(bad, "--max-size")


def _flat(output: str) -> str:
    """The text of a (boxed, wrapped) error panel on one line."""
    return " ".join(output.replace("│", " ").split())


def test_cache_commands(tmp_path: Path) -> None:
    root, now, runner = tmp_path / "cache", time.time(), CliRunner()
    _entry(root, "images/old.npy", 2000, 40, now)
    _entry(root, "features/new.pt", 1000, 1, now)

    res = runner.invoke(app, ["cache", "info", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "images" in res.output and "features" in res.output and "3.0 KB" in res.output

    res = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--dry-run", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0 and "would remove images/old.npy" in res.output
    assert (root / "images" / "old.npy").exists()

    res = runner.invoke(app, ["cache", "prune", "--max-size", "1.5KB", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "removed images/old.npy" in res.output and "1 entries, 1.0 KB left" in res.output
    assert not (root / "images" / "old.npy").exists() and (root / "features" / "new.pt").exists()

    res = runner.invoke(app, ["cache", "prune", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "give --older-than and/or --max-size" in _flat(res.output)
    res = runner.invoke(app, ["cache", "prune", "--max-size", "lots", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "Invalid value for --max-size: 'lots' is not a size" in _flat(res.output)
    assert (root / "features" / "new.pt").exists()


# The fitted linear-probe head and the demo's decoded digits are cache entries too ---------------------------
def _probe_task(n: int = 60, d: int = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    from workers.tasks.base import Split, TaskData

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d).float()
    s = Split(x, y)
    return TaskData(torch.nn.Identity(), d, 3, s, s, s, s), x


def test_the_probe_head_is_fitted_once_and_read_back_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.prepared as prepared

    data, feats = _probe_task()
    first = prepared.cached_linear_probe(data, feats, tmp_path)
    assert len(list((tmp_path / "probes").glob("*.pt"))) == 1

    def no_refit(*a: object, **k: object) -> None:
        raise AssertionError("the cached head was refitted")

    monkeypatch.setattr(prepared, "linear_probe", no_refit)
    again = prepared.cached_linear_probe(data, feats, tmp_path)
    assert torch.equal(again.head.weight, first.head.weight) and torch.equal(again.head.bias, first.head.bias)
    assert (again.C, again.cv, again.folds) == (first.C, first.cv, first.folds)
    assert again.info() == first.info() and first.folds == 5


def test_new_labels_or_a_broken_entry_refit_the_probe(tmp_path: Path) -> None:
    import workers.prepared as prepared

    data, feats = _probe_task()
    prepared.cached_linear_probe(data, feats, tmp_path)
    flipped = type(data.id_train)(data.id_train.x, data.id_train.y.roll(1))
    data2 = type(data)(data.backbone, 8, 3, flipped, flipped, flipped, flipped)
    prepared.cached_linear_probe(data2, feats, tmp_path)  # other labels: another entry
    entries = sorted((tmp_path / "probes").glob("*.pt"))
    assert len(entries) == 2
    for e in entries:
        e.write_bytes(b"not a tensor file")
    fit = prepared.cached_linear_probe(data, feats, tmp_path)
    assert fit.head.weight.shape == (3, 8) and fit.folds == 5
    assert torch.load(entries[0], weights_only=True) or torch.load(entries[1], weights_only=True)


def test_the_demo_digits_come_from_the_cache_unchanged(tmp_path: Path) -> None:
    from workers.tasks.digits import load_digit_images

    x, y = load_digit_images()
    cx, cy = load_digit_images(tmp_path)  # decoded into the cache
    again_x, again_y = load_digit_images(tmp_path)  # read back
    assert (tmp_path / "digits-shift" / "images-16px.pt").exists()
    assert torch.equal(x, again_x) and torch.equal(y, again_y) and torch.equal(cx, again_x)
    assert again_y.dtype == torch.int64 and again_x.shape == (1797, 1, 16, 16)
