"""A real ``autoft serve --no-runner --workers 2``: every worker answers, and a report link signed by one
worker opens on any other (they share the secret the parent drew)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.service.conftest import REPO, free_port


def test_two_workers_share_the_report_link_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFT_", "RAY_"))}
    env.update(AUTOFT_ENVIRONMENT="test", AUTOFT_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "autoft_service.cli"]
    key = subprocess.run(
        [*cli, "keys", "create", "--tenant", "acme", "--name", "w"], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=120, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*cli, "serve", "--no-runner", "--workers", "2", "--port", str(port)], env=env, cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while log.read_text().count("Application startup complete") < 2:  # both workers are up
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        auth = {"Authorization": f"Bearer {key}"}
        job = httpx.post(
            f"{base}/v1/jobs", headers=auth, json={"name": "w", "task": {"name": "digits-shift"}}
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        # A new connection per request: the kernel spreads them over the two workers' shared socket.
        paths = [
            httpx.post(f"{base}/v1/jobs/{job_id}/report-link", headers=auth).json()["path"] for _ in range(12)
        ]
        opened = [httpx.get(base + p, timeout=60).status_code for p in paths for _ in range(2)]
        assert opened == [200] * len(opened)
        workers = {line.split("[")[1].split("]")[0] for line in log.read_text().splitlines()
                   if "Started server process" in line}  # fmt: skip
        assert len(workers) == 2
    finally:
        server.terminate()
        server.wait(30)
