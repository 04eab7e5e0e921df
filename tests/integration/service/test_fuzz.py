"""Schemathesis fuzzes the OpenAPI spec of a real server: no request may produce a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.service.conftest import make_stack

pytestmark = pytest.mark.integration


def test_openapi_fuzz_has_no_server_errors(tmp_path: Path, task_cache: Path) -> None:
    stack = make_stack(tmp_path, ("sqlite", f"sqlite:///{tmp_path / 'fuzz.db'}"), task_cache)
    key = stack.create_key("fuzzer")
    stack.start("--no-runner")  # the API only: fuzzed valid jobs are stored, never run
    st = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    try:
        res = subprocess.run(
            [
                st, "run", f"{stack.url}/openapi.json",
                "--checks", "not_a_server_error",
                "--max-examples", "25",
                "--header", f"Authorization: Bearer {key}",
                "--generation-deterministic",
                "--request-timeout", "20",
            ],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )  # fmt: skip
    finally:
        stack.stop_all()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    assert m, out[-3000:]
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated >= 100 and passed == generated, out[-3000:]
