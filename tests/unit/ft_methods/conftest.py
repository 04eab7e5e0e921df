"""Fixtures for the fine-tuning-method tests: one torch thread, the fast demo task prepared once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TASK_PARAMS
from workers.prepared import PreparedTask, prepared_task


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """These tiny models run fastest on one thread, especially on a shared 2-core machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def prepared(task_cache: Path, one_thread: None) -> PreparedTask:
    return prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)
