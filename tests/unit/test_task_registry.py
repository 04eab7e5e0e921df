"""Task resolution: the registry, the autoft.tasks entry-point group, and module:attribute references."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from torch import nn

from autoft_service.errors import UnknownTask
from workers.tasks import TASKS, Split, Task, TaskData, list_tasks, resolve_task
from workers.tasks import base as task_base


class TinyTask(Task):
    """A plug-in task as an external package would ship it."""

    summary = "tiny"

    def load(self) -> TaskData:
        x, y = torch.randn(8, 3), torch.arange(8) % 2
        s = Split(x, y)
        return TaskData(nn.Linear(3, 4), 4, 2, s, s, s, s, {"same": s})


def test_entry_point_tasks_are_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="tiny-plugin", value=f"{__name__}:TinyTask", group="autoft.tasks")
    monkeypatch.setattr(task_base, "entry_points", lambda group: [ep] if group == "autoft.tasks" else [])
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    assert resolve_task("tiny-plugin") is TinyTask
    assert "tiny-plugin" in list_tasks()


def test_builtin_demo_task_is_declared_as_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="autoft.tasks")}
    assert "digits-shift" in names


def test_module_reference_and_unknown_names(tmp_path: Path) -> None:
    cls = resolve_task(f"{__name__}:TinyTask")
    data = cls.create({}, tmp_path).load()
    assert data.splits().keys() == {"id_val", "ood_val", "id_test", "ood_test/same"}
    with pytest.raises(UnknownTask, match="valid: .*digits-shift"):
        resolve_task("nope")
    with pytest.raises(UnknownTask, match="cannot import"):
        resolve_task("no_such_module:Task")


def test_split_checks_lengths() -> None:
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(3, 1), torch.zeros(2))
