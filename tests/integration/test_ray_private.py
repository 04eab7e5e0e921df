"""The local Ray runtime is private: its servers listen on every interface (Ray offers no loopback-only
bind), so every call must carry the token of the user running it. A client that lacks it is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DRIVER = """
import json, os, sys, time
import ray
from autoft_service.engine import ensure_ray
from autoft_service.settings import Settings
ensure_ray(Settings(data_dir=sys.argv[1], ray_num_cpus=1))
node = ray._private.worker.global_worker.node
print(json.dumps({"gcs": node.gcs_address, "mode": os.environ["RAY_AUTH_MODE"]}), flush=True)
sys.stdin.read()  # stay up until the test closes stdin
"""

CLIENT = "import ray, sys; ray.init(address=sys.argv[1]); print('CONNECTED', flush=True)"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "AUTOFT_RAY"))}
    env.update(RAY_py_gcs_connect_timeout_s="8", **extra)
    return env


def _connect(gcs: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, gcs], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_local_runtime_refuses_clients_without_its_token(tmp_path: Path) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path)], env=_env(), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line, driver.stderr.read() if driver.stderr else ""
        info = json.loads(line)
        assert info["mode"] == "token"
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()  # Ray's per-user token file
        # the GCS is reachable by address (it advertises a routable one), so only the token protects it
        host = info["gcs"].rsplit(":", 1)[0]
        assert host, info
        t0 = time.time()
        attackers = [
            _connect(info["gcs"], _env(RAY_AUTH_MODE="disabled")),
            _connect(info["gcs"], _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)),
        ]
        friend = _connect(info["gcs"], _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
        out, err = friend.communicate(timeout=120)
        assert friend.returncode == 0 and "CONNECTED" in out, err[-2000:]
        for p in attackers:
            out, err = p.communicate(timeout=120)
            assert p.returncode != 0 and "CONNECTED" not in out, (out, err[-2000:])
        assert time.time() - t0 < 120
    finally:
        if driver.stdin:
            driver.stdin.close()
        driver.wait(60)
