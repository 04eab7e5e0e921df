"""Shared fixtures (a small, fast variant of the demo task, a session-wide pretrained-backbone cache) and the
test tiers' markers.

Markers are applied by path and fixture use: everything under ``tests/integration`` and ``tests/reliability``
is ``integration``; a test that needs the PostgreSQL server (``postgres_url``, ``native_stack``, the
``postgres`` case of ``backend_url``) is also ``postgres``. Without a reachable server such a test is
skipped with the reason, except in CI (``CI=true``), where it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

#: libpq connection string of the maintenance database (trust auth on the CI host).
PG_ADMIN_DSN = os.environ.get("AUTOFT_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")

#: Fixtures that need the PostgreSQL server.
POSTGRES_FIXTURES = frozenset({"postgres_url", "native_stack"})
#: Folders (under tests/) whose tests use real Ray, MLflow, PostgreSQL or HTTP.
INTEGRATION_DIRS = ("integration", "reliability")
_TESTS = Path(__file__).resolve().parent

#: The demo task with a short pretraining run: the tests exercise the machinery, not the accuracy.
FAST_TASK_PARAMS: dict[str, Any] = {"shots_per_class": 10, "ood_val_size": 60, "pretrain_steps": 40}


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session, so the demo backbone is pretrained once."""
    return tmp_path_factory.mktemp("task-cache")


#: The final stage without its extra rows (LR grid, WiSE-FT, soup), for tests about other machinery.
LEAN_FINAL: dict[str, Any] = {"baseline_lr_grid": [1.0], "wise_ft_alphas": [], "soup_top_k": 0}


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
        # the extra final-stage rows (LR grid, WiSE-FT, soup) are off here; the engine test turns them on
        "final": {**LEAN_FINAL, "steps": 30, "baselines": ["ft", "lp", "lp_ft"]},
    }
    spec.update(overrides)
    return spec


# Markers ------------------------------------------------------------------------------------------------------
def needs_postgres(item: pytest.Item) -> bool:
    """Whether a collected test needs the PostgreSQL server (by the fixtures it uses)."""
    if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend_url") == "postgres"


def is_integration(path: Path) -> bool:
    try:
        parts = path.resolve().relative_to(_TESTS).parts
    except ValueError:
        return False
    return bool(parts) and parts[0] in INTEGRATION_DIRS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_integration(item.path) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)
        if needs_postgres(item):
            item.add_marker(pytest.mark.postgres)


@functools.cache
def postgres_unreachable() -> str | None:
    """Why the PostgreSQL server at ``PG_ADMIN_DSN`` cannot be used, or None when it answers."""
    try:
        import psycopg
    except ImportError as e:
        return f"psycopg is not installed: {e}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.Error as e:
        msg = str(e).strip()
        return msg.splitlines()[0] if msg else type(e).__name__


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") is None:
        return
    why = postgres_unreachable()
    if why is None:
        return
    reason = f"needs PostgreSQL at {PG_ADMIN_DSN!r} (set AUTOFT_TEST_PG_DSN), unreachable: {why}"
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
