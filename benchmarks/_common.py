"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from autoft_service.cli import demo_spec_path


def demo_spec_dict() -> dict[str, Any]:
    return yaml.safe_load(Path(demo_spec_path()).read_text())


def mean_ci(values: list[float]) -> str:
    """``mean ± half-width`` of a Student-t 95% confidence interval of the mean, in percent."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{100 * statistics.mean(values):.1f} ± {100 * half:.1f}"


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"
