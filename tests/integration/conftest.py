"""Integration fixtures: a fresh PostgreSQL database per test on the server at 127.0.0.1:5432."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_DSN


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database ``autoft_test_<random>``, dropped after the test."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"autoft_test_{uuid.uuid4().hex[:12]}"

    def admin() -> psycopg.Connection:
        try:
            return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as e:
            pytest.fail(f"PostgreSQL is needed for this test ({PG_ADMIN_DSN}): {e}")

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        info = conninfo_to_dict(PG_ADMIN_DSN)
        auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
        yield f"postgresql+psycopg://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with admin() as conn:  # a fresh connection: the server may have restarted during the test
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        out[k] = v
    return out


@pytest.fixture
def native_stack(task_cache: Path) -> Iterator[dict[str, str]]:
    """scripts/native_stack.sh up/down around a test; yields the stack's environment (+ STACK_DIR)."""
    from tests.integration.service.conftest import REPO, free_port

    d = Path(f"/tmp/afs-{os.getpid()}")  # short: Ray's socket paths must stay under 107 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFT_", "RAY_"))}
    env.update(
        API_PORT=str(free_port()), MLFLOW_PORT=str(free_port()), RAY_PORT=str(free_port()),
        AUTOFT_TASK_CACHE_DIR=str(task_cache), STACK_DB_PREFIX=f"afs{os.getpid()}",
    )  # fmt: skip
    script = str(REPO / "scripts" / "native_stack.sh")
    try:
        res = subprocess.run([script, "up", str(d)], env=env, capture_output=True, text=True, timeout=300)
        logs = (
            "\n".join(p.read_text()[-2000:] for p in sorted((d / "logs").glob("*.log"))) if d.exists() else ""
        )
        assert res.returncode == 0, res.stdout + res.stderr + logs
        yield {**env, **_env_file(d / "stack.env"), "STACK_DIR": str(d)}
    finally:
        subprocess.run([script, "down", str(d)], env=env, capture_output=True, text=True, timeout=120)
