"""The test tiers: PostgreSQL tests are marked by the fixtures they use, and skip without a server, except
in CI (``CI=true``), where they fail. Runs pytest on the PostgreSQL store suite against a closed port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PG_SUITE = "tests/integration/store/test_store_postgres.py"
NO_SERVER = "host=127.0.0.1 port=1 user=postgres dbname=postgres"  # nothing listens on port 1


def _pytest(*args: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["AUTOFT_TEST_PG_DSN"] = NO_SERVER
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_postgres_marker_selects_the_tests_that_use_the_server() -> None:
    res = _pytest("--collect-only", "-m", "postgres", PG_SUITE, ci=None)
    assert res.returncode == 0, res.stdout + res.stderr
    selected = [line for line in res.stdout.splitlines() if "::" in line]
    assert "test_store_postgres.py::TestPostgresStore::test_migrations_match_models_and_are_idempotent" in res.stdout
    assert any("test_concurrent_migrations_are_serialised" in line for line in selected)
    assert not any("test_unreachable_server_is_backend_unavailable" in line for line in selected)  # no fixture
    integration = _pytest("--collect-only", "-m", "not integration", "tests/integration/store", ci=None)
    assert "no tests collected" in integration.stdout or "deselected" in integration.stdout, integration.stdout
    assert "::" not in integration.stdout


def test_without_a_server_postgres_tests_skip_with_the_reason() -> None:
    res = _pytest(PG_SUITE, ci=None)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = _counts(res.stdout)
    # the suite's few tests that need no server pass; every one that needs it skips
    assert counts.get("passed", 0) >= 1 and counts.get("skipped", 0) > 10 and "failed" not in counts, res.stdout
    assert "needs PostgreSQL at" in res.stdout and "port=1" in res.stdout


def test_in_ci_a_missing_server_fails_instead_of_skipping() -> None:
    res = _pytest(PG_SUITE, "-k", "concurrent_migrations or unreachable", ci="true")
    assert res.returncode == 1, res.stdout + res.stderr
    counts = _counts(res.stdout)
    assert counts.get("passed", 0) >= 1 and counts.get("error", counts.get("failed", 0)) == 1, res.stdout
    assert "skipped" not in counts and "CI=true: needs PostgreSQL" in res.stdout
