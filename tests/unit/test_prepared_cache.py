"""What a long-lived worker process keeps of the tasks it loaded: one load per task revision, a few tasks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import workers.prepared as prepared_mod
from tests.conftest import FAST_TASK_PARAMS
from workers.prepared import clear_prepared, prepared_task
from workers.tasks import resolve_task


def test_a_new_revision_reloads_the_task_and_a_process_keeps_a_few(
    task_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepared_mod, "MAX_PREPARED", 2)
    clear_prepared()
    a = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache, revision="r1")
    assert prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache, revision="r1") is a
    b = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache, revision="r2")
    assert b is not a and not any(k[2] == "r1" for k in prepared_mod._cache)  # the old files' load is gone
    for shots in (11, 12):
        prepared_task("digits-shift", {**FAST_TASK_PARAMS, "shots_per_class": shots}, task_cache)
    assert len(prepared_mod._cache) == 2
    assert b not in prepared_mod._cache.values()  # least recently used first out
    clear_prepared()


def test_the_digits_revision_ignores_cache_hits_and_follows_the_backbone(task_cache: Path, tmp_path: Path) -> None:
    shutil.copytree(task_cache, tmp_path / "cache")
    task = resolve_task("digits-shift").create(dict(FAST_TASK_PARAMS), tmp_path / "cache")
    task.prepare()
    first = task.revision()
    assert first is not None
    task.prepare()  # a cache hit touches the file's mtime
    assert task.revision() == first
    path = task._cache_path()  # type: ignore[attr-defined]
    shutil.copy(path, path.with_suffix(".new"))
    os.replace(path.with_suffix(".new"), path)  # rewritten, as the cache writes: atomically
    assert task.revision() != first
    path.unlink()
    assert task.revision() is None
