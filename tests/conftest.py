"""Shared fixtures: a small, fast variant of the demo task and a session-wide pretrained-backbone cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: The demo task with a short pretraining run: the tests exercise the machinery, not the accuracy.
FAST_TASK_PARAMS: dict[str, Any] = {"shots_per_class": 10, "ood_val_size": 60, "pretrain_steps": 40}


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session, so the demo backbone is pretrained once."""
    return tmp_path_factory.mktemp("task-cache")


def small_spec(**overrides: Any) -> dict[str, Any]:
    """A minimal valid job spec dict for tests; top-level keys in ``overrides`` replace the defaults."""
    spec: dict[str, Any] = {
        "name": "test-job",
        "task": {"name": "digits-shift", "params": dict(FAST_TASK_PARAMS)},
        "search": {"sampler": {"seed": 0, "n_startup_trials": 3}},
        "budget": {
            "trials": 6,
            "inner_steps": 30,
            "eval_every": 10,
            "batch_size": 32,
            "max_concurrent": 2,
            "early_stopping": {"type": "asha", "grace_steps": 10, "reduction_factor": 2},
        },
        "final": {"steps": 30, "baselines": ["ft", "lp", "lp_ft"]},
    }
    spec.update(overrides)
    return spec
