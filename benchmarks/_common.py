"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from autoft_service.cli import demo_spec_path


def demo_spec_dict() -> dict[str, Any]:
    return yaml.safe_load(Path(demo_spec_path()).read_text())


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"
