"""Reliability: concurrent submissions and status reads against a real server (bounded), no errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.service.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def test_concurrent_submissions_and_reads() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.api_load", "--clients", "8", "--requests", "20", "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"(\d+) requests in [\d.]+s: (\d+) req/s, 0 errors", res.stdout)
    assert m and int(m.group(1)) == 8 * 20, res.stdout
    p99 = [float(x) for x in re.findall(r"│ (?:POST|GET) [^│]+│\s+\d+ │\s+[\d.]+ │\s+([\d.]+) │", res.stdout)]
    assert len(p99) == 3 and max(p99) < 10_000, res.stdout
    print("\n[load]\n" + res.stdout)
