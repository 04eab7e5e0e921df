"""Task registry and the built-in offline demo task."""

from __future__ import annotations

from workers.tasks import digits  # noqa: F401  (registers the built-in demo task)
from workers.tasks.base import TASKS, Split, Task, TaskData, list_tasks, register_task, resolve_task

__all__ = ["TASKS", "Split", "Task", "TaskData", "list_tasks", "register_task", "resolve_task"]
