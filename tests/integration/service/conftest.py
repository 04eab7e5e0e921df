"""A real ``autoft serve`` (uvicorn + runner + Ray) in a subprocess, on SQLite or PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import PG_ADMIN_DSN

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """One service deployment: its stores (data dir + database) outlive any server process."""

    data_dir: Path
    database_url: str
    task_cache: Path
    backend: str
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFT_", "RAY_"))}
        env.update(
            AUTOFT_ENVIRONMENT="test",
            AUTOFT_DATA_DIR=str(self.data_dir),
            AUTOFT_DATABASE_URL=self.database_url,
            AUTOFT_TASK_CACHE_DIR=str(self.task_cache),
            AUTOFT_RAY_NUM_CPUS="2",
            AUTOFT_RUNNER_LEASE_SECONDS="4",
            AUTOFT_RUNNER_HEARTBEAT_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def cli(self, *args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "autoft_service.cli", *args], env=self.env(), capture_output=True,
            text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr + res.stdout
        return res.stdout.strip()

    def create_key(self, tenant: str) -> str:
        return self.cli("keys", "create", "--tenant", tenant, "--name", f"test-{tenant}").splitlines()[-1]

    def start(self, *extra: str, timeout: float = 90) -> subprocess.Popen:
        self.port = self.port or free_port()  # a restarted server keeps its address
        log = open(self.log_dir / f"server-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed by the OS
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoft_service.cli", "serve", "--port", str(self.port), *extra],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not come up: {self.log_tail()}")

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """kill -9 the server process only (its Ray processes are left to notice the driver's death)."""
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def log_tail(self, n: int = 4000) -> str:
        """The end of the newest server's log, without the access lines of the tests' polling."""
        logs = sorted(self.log_dir.glob("server-*.log"))
        if not logs:
            return ""
        lines = [ln for ln in logs[-1].read_text().splitlines() if not re.search(r'"GET /v1/\S+ HTTP', ln)]
        return "\n".join(lines)[-n:]


def api(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"{stack.url}/v1", headers=headers, timeout=30)


def wait_state(client: httpx.Client, job_id: str, states: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    job: dict[str, Any] = {}
    while time.time() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job.get("state") in states:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout}s: {job}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The job-store URL of a fresh database of each backend."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path_factory.mktemp('db') / 'autoft.db'}"
        return
    import psycopg

    name = f"autoft_it_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgres", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_stack(tmp: Path, backend: tuple[str, str], task_cache: Path) -> Stack:
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    return Stack(tmp / "data", backend[1], task_cache, backend[0], tmp / "logs")
