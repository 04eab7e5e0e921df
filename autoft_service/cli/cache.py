"""``autoft cache info|prune``: this machine's task cache."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from autoft_service.cli.common import (
    DataDir,
    human_age,
    human_bytes,
    out,
    parse_duration,
    parse_size,
    settings_for,
)

cache_app = typer.Typer(
    help="Inspect and prune this machine's task cache (decoded images, frozen features, zero-shot heads). "
    "Every entry is recomputed when needed again; on a cluster, run it on each node.",
    no_args_is_help=True,
)


@cache_app.command("info")
def cache_info(data_dir: DataDir = None) -> None:
    """Entries and sizes per kind, with the age of each kind's least recently used entry."""
    from workers.disk_cache import cache_entries

    root = settings_for(data_dir).cache_dir
    entries, now = cache_entries(root), time.time()
    table = Table(title=f"task cache {root}")
    for col in ("kind", "entries", "size", "least recently used"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind in sorted({e.kind for e in entries}):
        mine = [e for e in entries if e.kind == kind]
        oldest = min(e.last_used for e in mine)
        table.add_row(
            kind or ".",
            str(len(mine)),
            human_bytes(sum(e.size for e in mine)),
            f"{human_age(now - oldest)} ago",
        )
    table.add_row("total", str(len(entries)), human_bytes(sum(e.size for e in entries)), "", style="bold")
    out.print(table)


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Remove entries unused for this long (e.g. 30d, 12h).")
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size", help="Then remove the least recently used until the cache fits (e.g. 50GB)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Remove cache entries by age and/or to fit a size; safe while jobs run (they recompute a miss)."""
    from workers.disk_cache import cache_entries, prune_cache

    if older_than is None and max_size is None:
        raise typer.BadParameter("give --older-than and/or --max-size", param_hint="--older-than/--max-size")
    age = parse_duration(older_than, "--older-than") if older_than is not None else None
    size = parse_size(max_size, "--max-size") if max_size is not None else None
    root = settings_for(data_dir).cache_dir
    removed = prune_cache(root, older_than_s=age, max_bytes=size, dry_run=dry_run)
    for e in removed:
        out.print(
            f"{'would remove' if dry_run else 'removed'} {e.path.relative_to(root)} ({human_bytes(e.size)})"
        )
    left = cache_entries(root)
    out.print(
        f"{'would free' if dry_run else 'freed'} {human_bytes(sum(e.size for e in removed))} in {len(removed)} "
        f"entries; {len(left)} entries, {human_bytes(sum(e.size for e in left))} left"
    )


def register(app: typer.Typer) -> None:
    """Add the ``cache`` group to the main ``autoft`` CLI."""
    app.add_typer(cache_app, name="cache")
