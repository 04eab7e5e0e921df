"""The job report in a real browser: headless Chromium draws every chart offline, from the page alone."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from autoft_service.report import render_report
from tests.suites.report import CHART_IDS, chart_div, job_record, trial_records

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y chromium"
WINDOW = (1200, 2400)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a private profile and no background traffic; fail on a non-zero exit."""
    if not CHROMIUM.exists():
        pytest.fail(f"headless Chromium is needed at {CHROMIUM} for this test; install it with: {INSTALL}")
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_report(job_record(), trial_records()), encoding="utf-8")
    return path


def test_every_chart_is_drawn_by_the_browser(tmp_path: Path, report_file: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", report_file.as_uri()).stdout
    assert "<table" in dom, dom[:2000]
    for chart_id in CHART_IDS:
        assert 'class="main-svg"' in chart_div(dom, chart_id), f"chart {chart_id!r} was not drawn"


def test_screenshot_is_a_full_page_image(tmp_path: Path, report_file: Path) -> None:
    png = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", report_file.as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == WINDOW  # the IHDR chunk: width, height
    # A blank page of this size compresses to a few KB; three charts, a table and text do not.
    assert len(data) > 40_000, f"screenshot is only {len(data)} bytes: was anything drawn?"
