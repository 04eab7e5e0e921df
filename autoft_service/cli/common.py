"""What every ``autoft`` command shares: the consoles, the common options, settings, parsing and formatting."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from autoft_service.settings import Settings

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where the embedded stores live (default: $AUTOFT_DATA_DIR or ./.autoft)."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to use (default: $RAY_ADDRESS or a local one)."),
]


def settings_for(data_dir: Path | None, ray_address: str | None = None) -> Settings:
    """The settings with the command's ``--data-dir`` / ``--ray-address`` over the environment."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if ray_address is not None:
        overrides["ray_address"] = ray_address
    return Settings(**overrides)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}  # fmt: skip


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w`` -> seconds."""
    t = text.strip().lower()
    try:
        value, unit = float(t[:-1]), DURATION_UNITS[t[-1:]]
    except (KeyError, ValueError):
        raise typer.BadParameter(
            f"{text!r} is not a duration like 30d, 12h, 45m or 90s", param_hint=option
        ) from None
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{text!r}: must be a finite, non-negative duration", param_hint=option)
    return value * unit


def parse_size(text: str, option: str) -> int:
    """``500MB``, ``20G``, ``1.5TiB``, ``4096`` -> bytes (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024)."""
    t = text.strip().lower().removesuffix("bytes").removesuffix("byte").removesuffix("b")
    num = t.rstrip("kmgti")
    try:
        value, unit = float(num), SIZE_UNITS[t[len(num) :]]
    except (KeyError, ValueError):
        raise typer.BadParameter(
            f"{text!r} is not a size like 20GB, 500MiB or 4096", param_hint=option
        ) from None
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{text!r}: must be a finite, non-negative size", param_hint=option)
    return int(value * unit)


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_age(seconds: float) -> str:
    """Seconds in the largest unit that fits: ``5400`` -> ``1.5h``."""
    for unit in ("d", "h", "m"):
        if seconds >= (size := DURATION_UNITS[unit]):
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


#: Row facts that say which hyperparameters a row ended up with (shown in the results table's last column).
CHOSEN_HPARAMS = {"lp/C": "C", "optim/lr": "lr", "wise_ft/alpha": "α", "soup/size": "soup"}


def chosen_hparams(row: dict[str, Any]) -> str:
    """``C=100 lr=3e-04 α=0.3``: the hyperparameters this row used (tuned or searched)."""
    parts = [f"{label}={row[k]:.3g}" for k, label in CHOSEN_HPARAMS.items() if k in row]
    return " ".join(parts)


def results_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    """Rows = methods; columns = ID test, OOD val, each OOD test, mean OOD test (for one metric), with the
    bootstrap 95% half-width of ID test and OOD mean where known, and the hyperparameters each row used.
    The row the job selected (and registered) is starred."""
    tests = [k.split("/")[1] for k in rows[0] if k.startswith("ood_test/") and k.endswith(f"/{metric}")]
    tests = [t for t in tests if t != "mean"]
    table = Table(title=title, caption="* the row the job selected on OOD val (its registered model)")
    table.add_column("method")
    cols = ["id_test", "ood_val", *[f"ood_test/{t}" for t in tests], "ood_test/mean"]
    for c in cols:
        header = {"id_test": "ID test", "ood_val": "OOD val", "ood_test/mean": "OOD mean"}.get(c, c[9:])
        table.add_column(header, justify="right")
    table.add_column("chosen")

    def cell(r: dict[str, Any], c: str) -> str:
        text = f"{100 * r.get(f'{c}/{metric}', float('nan')):.1f}"
        lo, hi = r.get(f"{c}/{metric}/ci_low"), r.get(f"{c}/{metric}/ci_high")
        if c in ("id_test", "ood_test/mean") and lo is not None and hi is not None:
            text += f" ±{50 * (hi - lo):.1f}"
        return text

    for r in rows:
        name = f"{r['method']} *" if r.get("selected") else r["method"]
        table.add_row(name, *[cell(r, c) for c in cols], chosen_hparams(r))
    return table
