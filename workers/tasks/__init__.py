"""Task registry and the built-in offline demo task: every module of this package is imported here, so a new
built-in task is one new file with ``@register_task("name")`` on its class."""

from __future__ import annotations

from workers.registry import import_submodules
from workers.tasks.base import TASKS, Split, Task, TaskData, list_tasks, register_task, resolve_task

import_submodules(__name__)

__all__ = ["TASKS", "Split", "Task", "TaskData", "list_tasks", "register_task", "resolve_task"]
